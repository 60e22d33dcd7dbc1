"""Attempts of a stage: each start of the worker group (the first, a restart after a worker
failure, a re-run after the driver died) appends one line to `<stage>/attempts.jsonl`, and rank 0
keeps `<stage>/progress.json` at the last finished optimizer step. The driver folds both into
summary.json: from which step the run resumed, how many steps were done twice, which processes on
which Ray nodes ran it."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any


ATTEMPTS_FILE = "attempts.jsonl"
PROGRESS_FILE = "progress.json"


def read_attempts(stage_dir: Path) -> list[dict[str, Any]]:
    try:
        lines = (stage_dir / ATTEMPTS_FILE).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def read_progress(stage_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((stage_dir / PROGRESS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def worker_identity(rank: int) -> dict[str, Any]:
    import ray

    return {"rank": rank, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname()}


def record_attempt(stage_dir: Path, rank: int, resume: Any, driver_started_at: float,
                   grad_accum: int | None = None) -> int | None:
    """Gather every rank's identity; rank 0 appends the attempt's line. Returns the attempt number
    on rank 0 (None elsewhere)."""
    import torch.distributed as dist

    from rayft.records.checkpoints import distributed

    me = worker_identity(rank)
    workers = [me]
    if distributed():
        workers = [None] * dist.get_world_size()
        dist.all_gather_object(workers, me)
    if rank != 0:
        return None
    number = len(read_attempts(stage_dir)) + 1
    previous = (read_progress(stage_dir) or {}) if number > 1 else {}
    reached = previous.get("global_step")
    start = resume.step or 0
    line = {
        "attempt": number, "started_at": time.time(), "driver_started_at": driver_started_at,
        "resumed_from_step": resume.step, "checkpoint": Path(resume.checkpoint.path).name if resume.checkpoint else None,
        "skipped_checkpoints": resume.skipped, "previous_attempt_reached_step": reached,
        "steps_redone": max(0, reached - start) if reached is not None else 0, "workers": workers,
        "previous_attempt_losses": previous.get("losses", []), "grad_accum": grad_accum,
    }
    with (stage_dir / ATTEMPTS_FILE).open("a") as f:
        f.write(json.dumps(line) + "\n")
    if resume.step:
        print(f"rayft: attempt {number}: resuming from step {resume.step} ({line['checkpoint']}); "
              f"{line['steps_redone']} step(s) of the previous attempt are redone", flush=True)
    before = len(read_attempts(stage_dir)[-2]["workers"]) if number > 1 else None
    if before is not None and before != len(workers):
        print(f"rayft: attempt {number}: {before} -> {len(workers)} workers; gradient accumulation {grad_accum} "
              "keeps the global batch", flush=True)
    return number


def resume_summary(stage_dir: Path) -> dict[str, Any]:
    """The summary.json fields about restarts and resumes."""
    attempts = read_attempts(stage_dir)
    if not attempts:
        return {}
    last = attempts[-1]
    return {
        "attempts": len(attempts),
        "restarts": len(attempts) - 1,
        "driver_runs": len({a["driver_started_at"] for a in attempts}),
        "resumed_from_step": last["resumed_from_step"],
        "steps_redone": sum(a["steps_redone"] for a in attempts),
        "skipped_checkpoints": [s for a in attempts for s in a["skipped_checkpoints"]],
        "workers": last["workers"],
        "attempt_history": [{k: a[k] for k in ("attempt", "resumed_from_step", "checkpoint",
                                               "previous_attempt_reached_step", "steps_redone")} for a in attempts],
        "resizes": resizes(attempts),
        **preemption_summary(stage_dir),
    }


def resizes(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each change of worker count between attempts: at which step, before / after, why."""
    out = []
    for before, after in zip(attempts, attempts[1:]):
        old, new = len(before["workers"]), len(after["workers"])
        if old != new:
            out.append({"step": after["resumed_from_step"] or 0, "workers_before": old, "workers_after": new,
                        "grad_accum_after": after.get("grad_accum"),
                        "why": "grew: the cluster had room for more workers" if new > old
                        else "shrank: a node (or its workers) went"})
    return out


def preemption_summary(stage_dir: Path) -> dict[str, Any]:
    from rayft.records.preemption import read_preemptions

    notices = read_preemptions(stage_dir)
    if not notices:
        return {}
    drains = [x for x in notices if "signal" not in x]
    out = {"preemption_notices": len(drains), "preempted_nodes": sorted({n for x in drains for n in x["nodes"]}),
           "checkpointed_on_preemption_at_steps": [x["step"] for x in notices]}
    if len(drains) < len(notices):
        out["sigterms"] = len(notices) - len(drains)
    return out
