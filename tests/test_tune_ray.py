"""Real Ray Tune sweeps of the tiny model, every trial a Ray Train run through rayft's launcher:
ASHA stops trials that cannot compete, the outputs are written, best_config.yaml trains with
`rayft train`, and an interrupted sweep resumes without running its finished trials again."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_DATA, REPO
from rayft.records.rundir import read_summary

pytestmark = pytest.mark.ray

# Trials ordered by grid: two learning rates that learn, then four so small that the eval loss
# cannot move. With 2 trials at a time the learners reach step 4 before any slow trial starts, so
# ASHA (keep the best half) stops the first slow trial there: a deterministic early stop.
CONFIG = {
    "model": {"name": "builtin:tiny-random"},
    "adapter": {"r": 8, "alpha": 16},
    "data": {"path": str(DEMO_DATA), "template": "alpaca", "max_length": 160, "eval_split": 8, "max_rows": 64},
    "training": {"max_steps": 12, "batch_size": 4, "eval_steps": 4, "logging_steps": 4, "lr_scheduler": "constant"},
    "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
    "eval": {"enabled": False},
    "tracking": {"wandb": {"project": "rayft-sweep", "mode": "offline"}},
    "tune": {"search_space": {"training.lr": "grid[3e-3, 2e-3, 1e-8, 2e-8, 3e-8, 4e-8]"},
             "search_alg": "grid", "scheduler": "asha", "grace_period": 4, "reduction_factor": 2,
             "max_concurrent_trials": 2,
             "max_failures": 1},  # a trial killed by Ray's memory monitor on a crowded CI machine runs again
}
SLOW = {1e-8, 2e-8, 3e-8, 4e-8}


def write_config(path: Path, storage: Path, **tune) -> Path:
    config = {**CONFIG, "storage": {"path": str(storage)}, "tune": {**CONFIG["tune"], **tune}}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def sweep(ray_cluster, tmp_path_factory):
    from rayft.tune.sweep import run_sweep

    root = tmp_path_factory.mktemp("tune")
    config = write_config(root / "asha.yaml", root / "runs")
    return run_sweep(config)


def test_asha_stops_trials_that_cannot_compete(sweep):
    rows = sweep.trials
    assert len(rows) == 6 and all(r.status in ("completed", "stopped") for r in rows), [(r.status, r.error) for r in rows]
    stopped = [r for r in rows if r.stopped_early]
    # The first slow trial to reach step 4 always meets the learners' results there and is stopped
    # (whether the slower learner survives step 4 depends on which of the two arrives first).
    assert any(r.params["training.lr"] in SLOW for r in stopped)
    assert all(r.steps < 12 and r.history and r.history[-1][0] == r.steps for r in stopped)
    completed = [r for r in rows if r.status == "completed"]
    assert completed and all(r.steps == 12 and [s for s, _ in r.history] == [4, 8, 12] for r in completed)
    assert sweep.best.params["training.lr"] in (3e-3, 2e-3) and sweep.best.status == "completed"
    assert sweep.best.final_metric == min(r.final_metric for r in completed)
    # a stopped trial's stage summary says so
    summary = read_summary(Path(stopped[0].run_dir) / "sft")
    assert summary["status"] == "stopped" and "asha" in summary["error"]


def test_outputs(sweep):
    out = sweep.sweep_dir
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {"training.lr", "final_eval_loss", "best_eval_loss", "steps", "stopped_early",
                               "wall_s"} <= set(rows[0])
    assert sum(r["best"] == "True" for r in rows) == 1
    data = json.loads((out / "results.json").read_text())
    assert data["best_trial"] == sweep.best.trial_id and data["metric"] == "eval_loss"
    assert data["total_steps"] == sum(r.steps for r in sweep.trials) < 6 * 12
    for trial in data["trials"]:
        assert trial["wall_s"] > 0 and trial["best_metric"] <= trial["final_metric"] + 1e-9
    assert (out / "metric.png").stat().st_size > 5000
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert "tune" not in best and best["training"]["lr"] == sweep.best.params["training.lr"]
    assert best["stages"][0]["training"]["lr"] == sweep.best.params["training.lr"]


def test_each_trial_is_one_wandb_run_grouped_by_the_sweep(sweep):
    """tracking.wandb (offline): one W&B run per trial, named after the trial, grouped by the sweep."""
    from wandb_reader import read_offline_run

    completed = [r for r in sweep.trials if r.status == "completed"]
    for trial in completed:
        run = read_offline_run(Path(trial.run_dir) / "sft")
        assert run["name"] == f"{Path(trial.run_dir).name}/sft" and run["group"] == sweep.sweep_dir.name
        steps = sorted(row["train/global_step"] for row in run["history"] if "eval/loss" in row)
        assert sorted(set(steps)) == [4, 8, 12]  # each evaluation (the last one also ends the stage)


def test_the_ui_listing_reads_the_sweep_and_its_trials(sweep):
    """rayft.records.listing (what `rayft ui`'s Sweeps and Runs tabs show) on this real sweep: every trial with its
    params, status, history and the best one; a sweep folder is not listed as a run."""
    from rayft.records.listing import curves, list_runs, list_sweeps, run_state

    storage = sweep.sweep_dir.parent
    found = {s.name: s for s in list_sweeps(storage)}
    state = found[sweep.sweep_dir.name]
    assert state.finished and state.metric == "eval_loss" and state.best_trial == sweep.best.trial_id
    assert state.best_config == sweep.sweep_dir / "best_config.yaml"
    by_id = {t["trial_id"]: t for t in state.trials}
    assert set(by_id) == {r.trial_id for r in sweep.trials}
    for row in sweep.trials:
        assert by_id[row.trial_id]["status"] == row.status
        assert [tuple(h) for h in by_id[row.trial_id]["history"]] == [tuple(h) for h in row.history]
        trial_run = run_state(Path(row.run_dir))
        assert trial_run.stages[0].name == "sft" and trial_run.status in ("completed", "stopped")
        # A stopped trial may evaluate once more before its workers stop; what Tune saw is a subset.
        assert {s for s, _ in row.history} <= {s for s, _ in curves(Path(row.run_dir) / "sft")["eval/loss"]}
    assert sweep.sweep_dir.name not in {r.name for r in list_runs(storage)}


def test_best_config_trains_with_rayft_train(sweep, tmp_path):
    from rayft.cli import main

    best = sweep.sweep_dir / "best_config.yaml"
    assert main(["train", str(best), "--run-name", "from-best"]) == 0
    summary = json.loads((Path(yaml.safe_load(best.read_text())["storage"]["path"]) / "from-best" / "sft" /
                          "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 12
    assert summary["eval_loss"] == pytest.approx(sweep.best.final_metric, rel=0.05)


def _completed_trials(sweep_dir: Path) -> dict[str, float]:
    """trial dir name -> mtime of its adapter, for trials whose stage completed."""
    done = {}
    for summary in sweep_dir.glob("trial_*/sft/summary.json"):
        try:
            if json.loads(summary.read_text()).get("status") == "completed":
                done[summary.parent.parent.name] = (summary.parent / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
        except (OSError, json.JSONDecodeError):
            pass
    return done


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    """`rayft tune` in a subprocess (its own local Ray) is interrupted with SIGINT (Ctrl-C) once a
    trial has finished; the same command then finishes the sweep and the finished trials are
    neither trained again nor replaced."""
    config = write_config(tmp_path / "resume.yaml", tmp_path / "runs", scheduler="none", max_concurrent_trials=1,
                          search_space={"training.lr": "grid[3e-3, 1e-8, 2e-8]"})
    config_data = yaml.safe_load(config.read_text())
    config_data["training"]["max_steps"] = 4
    config.write_text(yaml.safe_dump(config_data))
    sweep_dir = tmp_path / "runs" / "resume"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "rayft", "tune", str(config)]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not _completed_trials(sweep_dir) and first.poll() is None and time.time() < deadline:
        time.sleep(1)
    before = _completed_trials(sweep_dir)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=300)
    assert before, out[-3000:]
    assert first.returncode != 0, "the first run was interrupted, not finished"

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming sweep 'resume'" in second.stdout
    after = _completed_trials(sweep_dir)
    assert len(after) == 3, after
    for trial, mtime in before.items():
        assert after[trial] == mtime, f"{trial} was trained again"
    results = json.loads((sweep_dir / "results.json").read_text())
    assert sorted(t["params"]["training.lr"] for t in results["trials"]) == [1e-8, 2e-8, 3e-3]
    assert all(t["status"] == "completed" for t in results["trials"])
