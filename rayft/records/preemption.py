"""A checkpoint on preemption notice (`scaling.checkpoint_on_preemption`).

Ray announces a node's end before it comes when the node is drained with reason preemption (a
spot instance reclaimed, `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION`, the preStop hook
rayft's KubeRay manifests give worker pods, so a pod's SIGTERM becomes such a drain). Every worker
asks `ray.train.get_preemption_info()` at each step boundary (a collective: all ranks ask the same
number of times); while a drain is pending the Trainer saves at every step boundary, and the
checkpoint goes through Ray Train as any other (rayft.records.checkpoints). When the next step and
its checkpoint no longer fit before the drain's deadline, the workers wait there. When the node
goes (or the deadline passes, at which Ray Train restarts the worker group), the stage resumes
from the checkpoint of the last finished step: no step is redone.

Rank 0 appends each notice to `<stage>/preemptions.jsonl` (step, nodes, ranks, deadline), which
summary.json folds in.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

PREEMPTIONS_FILE = "preemptions.jsonl"


class PreemptionSaver(TrainerCallback):
    """Checkpoint at every step boundary while a preemption is pending; once the next step and its
    checkpoint would no longer fit before the deadline, wait for the end there (a step finished
    after the last committed checkpoint would be redone)."""

    MARGIN = 1.5  # the next step + checkpoint must fit this many times in what is left
    WAIT_PAST_DEADLINE_S = 60.0  # Ray Train restarts the group at the deadline; if not, train on

    def __init__(self, stage_dir: Path, rank: int):
        self.stage_dir, self.rank = stage_dir, rank
        self.notices = 0
        self.deadline_s: float | None = None
        self.step_began = self.step_ended = 0.0
        self.step_s = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_began = time.monotonic()

    def on_save(self, args, state, control, **kwargs):
        """After this checkpoint is reported (CheckpointReporter runs first): train on only if
        another step and checkpoint fit before the deadline."""
        if self.deadline_s is None:
            return control
        save_s = time.monotonic() - self.step_ended
        left = self.deadline_s - time.time()
        if left > self.MARGIN * (self.step_s + save_s):
            return control
        if self.rank == 0:
            print(f"rayft: step {state.global_step} is checkpointed and {max(left, 0):.0f} s are left before the "
                  f"preemption, less than a step and a checkpoint ({self.step_s + save_s:.1f} s): waiting for it here",
                  flush=True)
        while time.time() < self.deadline_s + self.WAIT_PAST_DEADLINE_S:
            time.sleep(0.5)
        self.deadline_s = None  # still here: the drain was called off; train on
        return control

    def on_step_end(self, args, state, control, **kwargs):
        import ray.train

        self.step_ended = time.monotonic()
        self.step_s = self.step_ended - self.step_began
        info = ray.train.get_preemption_info()
        if info is None:
            return control
        control.should_save = True  # this step's checkpoint, before the node goes
        self.deadline_s = info.deadline_ms / 1000 if info.deadline_ms else None
        self.notices += 1
        if self.rank == 0:
            line = {"step": state.global_step, "noticed_at": time.time(), "nodes": info.preempted_node_ids,
                    "ranks": info.preempted_ranks, "deadline_ms": info.deadline_ms}
            with (self.stage_dir / PREEMPTIONS_FILE).open("a") as f:
                f.write(json.dumps(line) + "\n")
            if self.notices == 1:
                left = (info.deadline_ms / 1000 - time.time()) if info.deadline_ms else None
                print(f"rayft: node(s) {', '.join(n[:8] for n in info.preempted_node_ids)} will be preempted"
                      + (f" in {left:.0f} s" if left is not None else "")
                      + f" (ranks {info.preempted_ranks}): checkpointing at every step until then", flush=True)
        return control


def read_preemptions(stage_dir: Path) -> list[dict[str, Any]]:
    try:
        lines = (Path(stage_dir) / PREEMPTIONS_FILE).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]
