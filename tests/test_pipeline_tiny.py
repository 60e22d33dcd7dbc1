"""The classic RLHF path as shipped in jobs/configs/pipeline_tiny.yaml: SFT -> reward -> PPO scored
by that reward model, on the tiny model with 2 Ray workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO
from rayft.config.load import load_pipeline

pytestmark = pytest.mark.ray


def test_sft_reward_ppo_pipeline(ray_cluster, tmp_path):
    from rayft.train.launch import run_pipeline

    loaded = load_pipeline(REPO / "jobs" / "configs" / "pipeline_tiny.yaml", [f"storage.path={tmp_path}"])
    result = run_pipeline(loaded)
    run = result.run_dir
    summaries = {s: json.loads((run / s / "summary.json").read_text()) for s in ("sft", "reward", "ppo")}
    assert all(s["status"] == "completed" for s in summaries.values())
    reward, ppo = summaries["reward"], summaries["ppo"]
    # The synthetic preference (a correct order JSON vs one with a typical mistake) is learnable.
    assert reward["eval_accuracy"] >= 0.75, reward["eval_accuracy"]
    # PPO starts from (and is referenced to) the SFT policy, not the reward model.
    assert ppo["init_adapter"] == str(run / "sft" / "adapter")
    history = ppo["ppo_history"]
    assert ppo["reward_last"] > ppo["reward_first"], [h["reward"] for h in history]
    assert max(h["kl"] for h in history) < 20, "KL to the reference stays bounded"
    assert all(h["replica_drift"] < 1e-6 for h in history)
    assert Path(ppo["output"], "value_head.pt").is_file()
    assert not Path(ppo["output"], "ref").exists(), "the frozen reference adapter is not saved"
