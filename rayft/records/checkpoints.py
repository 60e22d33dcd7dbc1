"""Mid-run checkpoints through Ray Train, each one verified before it is resumed from.

Every `training.save_steps` steps the HF/TRL Trainer writes `checkpoint-<step>/` (weights or
adapter, optimizer, scheduler, RNG state per rank, trainer_state.json) into each worker's local
output folder. `CheckpointReporter` then adds a manifest for its rank (every file with its size
and sha256) and reports the folder to Ray Train, which uploads every rank's part into one
`<stage>/ray/checkpoint_step<N>_<time>/checkpoint/` and registers it only after all ranks'
uploads finished; Ray keeps the last `save_total_limit` (CheckpointConfig.num_to_keep).

On (re)start `choose_resume_checkpoint` walks Ray's registered checkpoints newest first and
takes the first whose manifests are all present and match the files, warning about each one it
skips, so a checkpoint truncated or half-copied after registration is never resumed from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

HF_FOLDER = "checkpoint"  # the HF checkpoint's folder inside a Ray checkpoint
MANIFEST = "rayft-manifest-rank{rank}.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, *, rank: int, world_size: int, step: int) -> Path:
    """List this rank's files in `folder` (everything but other manifests), written last."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("rayft-manifest-")):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    target = folder / MANIFEST.format(rank=rank)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps({"step": step, "rank": rank, "world_size": world_size, "files": files}, indent=1))
    tmp.replace(target)
    return target


def verify_checkpoint(folder: Path) -> tuple[int | None, str | None]:
    """(step, None) when every rank's manifest is present and each listed file has its size and
    hash; else (step or None, the reason)."""
    try:
        head = json.loads((folder / MANIFEST.format(rank=0)).read_text())
    except FileNotFoundError:
        return None, f"no {MANIFEST.format(rank=0)} (written last, so the checkpoint is incomplete)"
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"unreadable {MANIFEST.format(rank=0)}: {exc}"
    step = head.get("step")
    for rank in range(int(head.get("world_size", 1))):
        name = MANIFEST.format(rank=rank)
        try:
            manifest = head if rank == 0 else json.loads((folder / name).read_text())
        except (OSError, json.JSONDecodeError):
            return step, f"missing or unreadable {name}"
        for rel, expected in manifest["files"].items():
            path = folder / rel
            if not path.is_file():
                return step, f"missing file {rel}"
            if path.stat().st_size != expected["size"]:
                return step, f"{rel} has {path.stat().st_size} bytes, the manifest says {expected['size']}"
            if _sha256(path) != expected["sha256"]:
                return step, f"{rel} does not match its sha256"
    return step, None


class CheckpointReporter(TrainerCallback):
    """After each HF checkpoint save: add this rank's manifest, report the folder to Ray Train
    (a barrier: every rank reports every checkpoint). Replaces Ray's RayTrainReportCallback,
    which reports the same layout without a manifest."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def on_save(self, args, state, control, **kwargs):
        import ray.train

        local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        metrics = {"step": state.global_step, "epoch": state.epoch}
        losses = [log["loss"] for log in state.log_history if "loss" in log]
        if losses:
            metrics["loss"] = losses[-1]
        with tempfile.TemporaryDirectory(prefix="rayft-ckpt-") as tmp:
            checkpoint = None
            if local.is_dir():
                write_manifest(local, rank=self.rank, world_size=self.world_size, step=state.global_step)
                shutil.copytree(local, Path(tmp) / HF_FOLDER)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            # rank 0's name wins (Ray broadcasts it); the time keeps a redone step's name unique.
            name = f"checkpoint_step{state.global_step:06d}_{time.strftime('%Y%m%d-%H%M%S')}_{time.time_ns() % 10**6:06d}"
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


@dataclass
class ResumePoint:
    """The checkpoint a worker resumes from, and the newer ones skipped as corrupt."""

    checkpoint: Any = None  # ray.train.Checkpoint
    step: int | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _candidates() -> list[Any]:
    """Ray's registered checkpoints, newest first (in the order Ray registered them; the latest
    alone if the list API fails)."""
    import ray.train

    try:
        reported = ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=60)
        found = [r.checkpoint for r in reported]
    except Exception as exc:  # noqa: BLE001 - an alpha API; the latest checkpoint is still usable
        print(f"rayft: WARNING: cannot list the reported checkpoints ({type(exc).__name__}: {exc}); "
              "only the latest one is considered for resuming", flush=True)
        found = []
    latest = ray.train.get_checkpoint()
    if latest is not None:
        found = [c for c in found if c.path != latest.path] + [latest]
    return found[::-1]


def _choose(candidates: list[Any]) -> tuple[int | None, int | None, list[dict[str, Any]]]:
    skipped = []
    for index, checkpoint in enumerate(candidates):
        with checkpoint.as_directory() as local:
            step, problem = verify_checkpoint(Path(local) / HF_FOLDER)
        if problem is None:
            return index, step, skipped
        skipped.append({"checkpoint": Path(checkpoint.path).name, "step": step, "reason": problem})
        print(f"rayft: WARNING: skipping checkpoint {Path(checkpoint.path).name}: {problem}; "
              "trying the previous one", flush=True)
    return None, None, skipped


def distributed() -> bool:
    """True when there is a process group of more than one worker, ready for object collectives
    (NCCL needs each process on its own GPU before the first one)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    if dist.get_backend() == "nccl":
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
    return True


def choose_resume_checkpoint(rank: int) -> ResumePoint:
    """Rank 0 verifies Ray's checkpoints newest first; every rank resumes from its choice."""
    import torch.distributed as dist

    candidates = _candidates()
    decision = [_choose(candidates) if rank == 0 else None]
    if distributed():
        dist.broadcast_object_list(decision, src=0)
    index, step, skipped = decision[0]
    if index is None and skipped:
        print("rayft: WARNING: no intact checkpoint is left; training starts from step 0", flush=True)
    return ResumePoint(candidates[index] if index is not None else None, step, skipped)
