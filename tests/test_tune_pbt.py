"""A real population-based-training sweep of the tiny model: every trial trains in segments (each a
Ray Train run through rayft's launcher), the weak trials continue from a strong trial's adapter
with perturbed learning rates, and the outputs say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_DATA

pytestmark = pytest.mark.ray

CONFIG = {
    "model": {"name": "builtin:tiny-random"},
    "adapter": {"r": 8, "alpha": 16},
    "data": {"path": str(DEMO_DATA), "template": "alpaca", "max_length": 160, "eval_split": 8, "max_rows": 64},
    "training": {"max_steps": 8, "batch_size": 4, "eval_steps": 4, "logging_steps": 4, "lr_scheduler": "constant"},
    # The whole population runs at once (4 x half a CPU), so synchronous PBT sees every trial at step 4.
    "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 0.5}},
    "eval": {"enabled": False},
    # Synchronous PBT: at step 4 every trial has reported, so the bottom half by eval loss is known
    # whatever the timing, and each of those continues from one of the top half. Learning rates are
    # seeded samples over five decades, so the population differs widely.
    "tune": {"search_space": {"training.lr": "loguniform[1e-7, 5e-3]"}, "search_alg": "random", "num_samples": 4,
             "seed": 3, "scheduler": "pbt", "perturbation_interval": 4, "quantile_fraction": 0.5,
             "resample_probability": 0.0, "synchronous": True, "max_concurrent_trials": 4, "max_failures": 1},
}


@pytest.fixture(scope="module")
def pbt_sweep(ray_cluster, tmp_path_factory):
    from rayft.tune.sweep import run_sweep

    root = tmp_path_factory.mktemp("pbt")
    path = root / "pbt.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "storage": {"path": str(root / "runs")}}))
    return run_sweep(path)


def test_every_trial_reaches_max_steps_in_segments(pbt_sweep):
    rows = pbt_sweep.trials
    assert len(rows) == 4 and all(r.status == "completed" for r in rows), [(r.status, r.error) for r in rows]
    for row in rows:
        summary = json.loads((Path(row.run_dir) / "sft" / "summary.json").read_text())
        assert summary["global_step"] == 8 and row.steps == 8
        assert (Path(row.run_dir) / "sft" / "adapter" / "adapter_config.json").is_file()
        assert [step for step, _ in row.history] == [4, 8]


def test_weak_trials_continue_from_strong_ones_with_perturbed_values(pbt_sweep):
    rows = {r.trial_id: r for r in pbt_sweep.trials}
    schedules = {tid: json.loads((Path(r.run_dir) / "pbt_schedule.json").read_text()) for tid, r in rows.items()}
    at_4 = {tid: dict(r.history)[4] for tid, r in rows.items()}
    ranked = sorted(rows, key=at_4.get)  # best eval loss at step 4 first
    strong, weak = set(ranked[:2]), set(ranked[2:])
    copied = {tid: [e for e in schedules[tid] if e["event"] == "restored" and e["from_trial"] != tid]
              for tid in rows}
    assert not copied[ranked[0]] and not copied[ranked[1]], copied  # the top half keeps its own weights
    for tid in weak:
        assert len(copied[tid]) == 1 and copied[tid][0]["from_trial"] in strong and copied[tid][0]["at_step"] == 4, \
            schedules[tid]
        donor_lr = schedules[copied[tid][0]["from_trial"]][0]["params"]["training.lr"]
        new_lr = copied[tid][0]["params"]["training.lr"]
        assert any(abs(new_lr - f * donor_lr) <= 1e-9 * donor_lr for f in (0.8, 1.2)), (new_lr, donor_lr)
        # From the donor's step-4 adapter, the weak trial's last segment trains like the strong ones:
        # it ends better than it stood at step 4.
        assert rows[tid].final_metric < at_4[tid], (rows[tid].history, schedules[tid])


def test_best_config_names_the_pbt_adapter(pbt_sweep):
    text = (pbt_sweep.sweep_dir / "best_config.yaml").read_text()
    assert "# pbt: this trial's values changed during training" in text
    assert f"{pbt_sweep.best.run_dir}/sft/adapter" in text
    assert (pbt_sweep.sweep_dir / "results.csv").is_file() and (pbt_sweep.sweep_dir / "metric.png").is_file()
