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

A SIGTERM to a worker process takes the same way (rayft.records.sigterm): the workers learn at
each step boundary whether any of them got one (an all-reduce), save, and once Ray Train has
committed the checkpoint the signalled process exits and the others wait for Ray Train's restart.

Rank 0 appends each notice to `<stage>/preemptions.jsonl` (step, nodes, ranks, deadline; `signal`
for a SIGTERM), which summary.json folds in.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rayft.records.sigterm import SIGTERM_GRACE_S, exit_now, sigterm_received

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
        self.sigterm = False  # a worker of this group got SIGTERM: save, then end
        self.deadline_s: float | None = None
        self.step_began = self.step_ended = 0.0
        self.step_s = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_began = time.monotonic()

    def on_save(self, args, state, control, **kwargs):
        """After this checkpoint is reported (CheckpointReporter runs first): train on only if
        another step and checkpoint fit before the deadline; after a SIGTERM, end."""
        if self.sigterm:
            self._end_after_sigterm(state.global_step)
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
        signalled = _signalled_rank(self.rank if sigterm_received() else None)
        if not self.sigterm and signalled is not None:
            self.sigterm = True
            control.should_save = True
            self._record(state.global_step, {"signal": "SIGTERM", "nodes": [], "ranks": [signalled]})
        info = ray.train.get_preemption_info()
        if info is None:
            return control
        control.should_save = True  # this step's checkpoint, before the node goes
        self.deadline_s = info.deadline_ms / 1000 if info.deadline_ms else None
        self.notices += 1
        self._record(state.global_step, {"nodes": info.preempted_node_ids, "ranks": info.preempted_ranks,
                                         "deadline_ms": info.deadline_ms})
        if self.rank == 0:
            if self.notices == 1:
                left = (info.deadline_ms / 1000 - time.time()) if info.deadline_ms else None
                print(f"rayft: node(s) {', '.join(n[:8] for n in info.preempted_node_ids)} will be preempted"
                      + (f" in {left:.0f} s" if left is not None else "")
                      + f" (ranks {info.preempted_ranks}): checkpointing at every step until then", flush=True)
        return control

    def _record(self, step: int, notice: dict[str, Any]) -> None:
        if self.rank == 0:
            with (self.stage_dir / PREEMPTIONS_FILE).open("a") as f:
                f.write(json.dumps({"step": step, "noticed_at": time.time(), **notice}) + "\n")

    def _end_after_sigterm(self, step: int) -> None:
        """Step `step` is reported: once Ray Train has committed it, the signalled process exits
        (Ray's handler) and every worker waits here for Ray Train to restart the group."""
        import ray.train

        try:
            ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED,
                                                   timeout_s=SIGTERM_GRACE_S)
        except Exception as exc:  # noqa: BLE001 - an alpha API: exit anyway, the checkpoint is uploaded
            print(f"rayft: WARNING: could not confirm checkpoint {step} was committed ({exc})", flush=True)
        if self.rank == 0:
            print(f"rayft: step {step} is checkpointed after a SIGTERM: the signalled worker exits now and the "
                  "stage goes on from this step when Ray Train restarts it", flush=True)
        if sigterm_received():
            exit_now()
        waited = time.monotonic()
        while time.monotonic() - waited < self.WAIT_PAST_DEADLINE_S:
            time.sleep(0.5)
        self.sigterm = False  # still here: no restart came; train on


def _signalled_rank(mine: int | None) -> int | None:
    """A rank that got SIGTERM (the highest), for every worker: an all-reduce of `mine` (this
    worker's rank if it got one, else None)."""
    from rayft.records.checkpoints import distributed

    if not distributed():
        return mine
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([-1 if mine is None else mine], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return None if value.item() < 0 else int(value.item())


def read_preemptions(stage_dir: Path) -> list[dict[str, Any]]:
    try:
        lines = (Path(stage_dir) / PREEMPTIONS_FILE).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]
