"""`rayft train` SIGKILLed (the driver and the local Ray it started, as a process tree) after two
checkpoints exist; then (b) the same command with the same --run-name resumes the stage from its
last checkpoint, and (c) in a copy of the run whose latest checkpoint was truncated, the re-run
warns, skips it and resumes from the one before."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from resilience import (TINY_SFT, assert_adapter_loads, checkpoint_dirs, current_step, kill_tree, registered_steps,
                        wait_for)

pytestmark = pytest.mark.ray

MAX_STEPS = 8


def _command(storage: Path, run_name: str) -> list[str]:
    sets = [*TINY_SFT, f"storage.path={storage}", f"training.max_steps={MAX_STEPS}"]
    return [sys.executable, "-m", "rayft", "train", str(REPO / "jobs" / "configs" / "sft_tiny.yaml"),
            *[a for s in sets for a in ("--set", s)], "--run-name", run_name]


def _env() -> dict[str, str]:
    # RAY_ADDRESS=local: the driver starts its own Ray, never joins another cluster on this machine.
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": "local"}


def _rerun(storage: Path, run_name: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(_command(storage, run_name), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        kill_tree(proc.pid)  # on a timeout, the driver and the Ray it started; otherwise a no-op
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """The killed run, the checkpoint steps registered at the kill, and a copy of it."""
    storage = tmp_path_factory.mktemp("driver-kill")
    stage = storage / "drv" / "sft"
    log = (storage / "first.log").open("w")
    proc = subprocess.Popen(_command(storage, "drv"), env=_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for("two registered checkpoints and a step past them",
                 lambda: len(registered_steps(stage)) >= 2 and current_step(stage) > max(registered_steps(stage)),
                 timeout=600, alive=lambda: proc.poll() is None)
        steps = registered_steps(stage)
        assert current_step(stage) < MAX_STEPS, "the run finished before the test could kill it"
    finally:
        kill_tree(proc.pid)
        proc.wait(timeout=60)
    assert json.loads((stage / "summary.json").read_text())["status"] == "running"
    shutil.copytree(storage / "drv", storage / "drv-corrupt", symlinks=True)
    return storage, steps


def test_rerun_after_driver_kill_resumes(killed_run, tiny_model_path):
    storage, steps = killed_run
    done = _rerun(storage, "drv")
    stage = storage / "drv" / "sft"
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == MAX_STEPS
    assert summary["driver_runs"] == 2 and summary["attempts"] == 2
    assert summary["resumed_from_step"] >= max(steps)
    assert summary["steps_redone"] <= 2
    assert f"resuming from step {summary['resumed_from_step']}" in done.stdout
    assert sorted(dict(map(tuple, summary["loss_history"]))) == list(range(1, MAX_STEPS + 1))
    assert_adapter_loads(stage / "adapter", tiny_model_path)


def test_corrupt_latest_checkpoint_is_skipped(killed_run, tiny_model_path):
    storage, _ = killed_run
    stage = storage / "drv-corrupt" / "sft"
    *_, previous, latest = checkpoint_dirs(stage)
    weights = latest / "checkpoint" / "adapter_model.safetensors"
    with weights.open("r+b") as f:  # a half-copied file: truncated to half its size
        f.truncate(weights.stat().st_size // 2)
    # Read before the re-run: its new checkpoints push this one out (keep-last-K).
    previous_step = json.loads((previous / "checkpoint" / "rayft-manifest-rank0.json").read_text())["step"]
    done = _rerun(storage, "drv-corrupt")
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == MAX_STEPS
    assert summary["resumed_from_step"] == previous_step
    [skipped] = summary["skipped_checkpoints"]
    assert skipped["checkpoint"] == latest.name and "adapter_model.safetensors" in skipped["reason"]
    assert f"WARNING: skipping checkpoint {latest.name}" in done.stdout
    assert_adapter_loads(stage / "adapter", tiny_model_path)
