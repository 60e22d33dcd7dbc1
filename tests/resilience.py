"""Helpers of the resilience tests: wait for a run to reach a state, read what Ray Train has
registered, kill process trees that the test itself started."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

from conftest import DEMO_DATA

# A tiny-model SFT that checkpoints every 2 steps; slow enough (batch, length) that a test can
# act between two checkpoints, fast enough to stay a few seconds per attempt.
TINY_SFT = ["model.name=builtin:tiny-random", f"data.path={DEMO_DATA}", "data.template=alpaca",
            "data.max_length=160", "data.eval_split=0", "training.batch_size=4", "training.lr=3e-3",
            "training.logging_steps=1", "training.save_steps=2", "training.save_total_limit=3",
            "scaling.num_workers=2", "eval.enabled=false"]


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 300, every: float = 0.05,
             alive: Callable[[], bool] | None = None) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if alive is not None and not alive():
            raise AssertionError(f"the run ended before {what}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def registered_steps(stage_dir: Path) -> list[int]:
    """Steps of the checkpoints Ray Train has registered (its snapshot lists only checkpoints
    whose upload finished on every rank)."""
    try:
        snapshot = json.loads((stage_dir / "ray" / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return sorted(int(r["metrics"]["step"]) for r in snapshot["checkpoint_results"])


def checkpoint_dirs(stage_dir: Path) -> list[Path]:
    """Registered checkpoint folders, oldest first."""
    snapshot = json.loads((stage_dir / "ray" / "checkpoint_manager_snapshot.json").read_text())
    return [stage_dir / "ray" / r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]]


def current_step(stage_dir: Path) -> int:
    try:
        return json.loads((stage_dir / "progress.json").read_text())["global_step"]
    except (OSError, json.JSONDecodeError, KeyError):
        return 0


def logged_steps(stage_dir: Path) -> list[int]:
    """Steps whose training loss rank 0 has logged (progress.json): a step is counted as done
    before its loss is gathered and logged, so a kill in between leaves it without a loss."""
    try:
        return [int(step) for step, _ in json.loads((stage_dir / "progress.json").read_text())["losses"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return []


def kill_tree(pid: int) -> None:
    """SIGKILL a process this test started and all its descendants (children first listed, so
    none is re-parented out of reach)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    family = [root, *root.children(recursive=True)]
    for proc in family:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)


def assert_adapter_loads(adapter: Path, model_path: str) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items()), "LoRA B must have moved"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path), str(adapter))
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
