"""Checkpoints of rayft's PPO loop, through Ray Train like the Trainer-based stages
(rayft.records.checkpoints): the same manifests, the same verified newest-first resume.

Rank 0 writes `ppo_state.pt` (the trainable weights - adapter and value head - in the trainer's
parameter order, the optimizer, the step and the step history; replicas are identical, so one copy
serves all) and every rank its own `ppo_rng_rank<r>.pt` (its prompt sampler and torch RNG: each
worker samples its own rollouts)."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from rayft.records.checkpoints import HF_FOLDER, write_manifest

STATE = "ppo_state.pt"
RNG = "ppo_rng_rank{rank}.pt"


def save_ppo_checkpoint(trainer: Any, history: list[dict[str, Any]], rank: int, world: int) -> None:
    import ray.train

    step = trainer.global_step
    with tempfile.TemporaryDirectory(prefix="rayft-ppo-ckpt-") as tmp:
        folder = Path(tmp) / HF_FOLDER
        folder.mkdir()
        if rank == 0:
            torch.save({"global_step": step, "params": [p.detach().cpu() for p in trainer.params],
                        "optimizer": trainer.optimizer.state_dict(), "history": history,
                        "kl_coef": trainer.kl_coef}, folder / STATE)
        torch.save({"sampler": trainer.rng.getstate(), "torch": torch.get_rng_state()}, folder / RNG.format(rank=rank))
        write_manifest(folder, rank=rank, world_size=world, step=step)
        name = f"checkpoint_step{step:06d}_{time.strftime('%Y%m%d-%H%M%S')}_{time.time_ns() % 10**6:06d}"
        ray.train.report({"step": step}, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)


def load_ppo_checkpoint(trainer: Any, checkpoint: Any, rank: int) -> list[dict[str, Any]]:
    """Restore the trainer in place; returns the step history up to the checkpoint."""
    with checkpoint.as_directory() as local:
        folder = Path(local) / HF_FOLDER
        state = torch.load(folder / STATE, weights_only=False)
        rng_file = folder / RNG.format(rank=rank)
        rng = torch.load(rng_file, weights_only=False) if rng_file.is_file() else None
    with torch.no_grad():
        for param, saved in zip(trainer.params, state["params"], strict=True):
            param.copy_(saved)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.global_step = state["global_step"]
    trainer.kl_coef = state.get("kl_coef", trainer.kl_coef)
    if rng is not None:  # absent when the run resumes with more workers than it saved with
        trainer.rng = random.Random()
        trainer.rng.setstate(rng["sampler"])
        torch.set_rng_state(rng["torch"])
    return state["history"]
