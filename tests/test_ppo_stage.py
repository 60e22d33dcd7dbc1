"""PPO on Ray Train (rayft's own loop): mechanics on the tiny model with 2 workers, and on the
real embedded model a programmatic reward (short answers) that must go up."""

from __future__ import annotations

import json

import pytest

from conftest import DEMO_DATA
from rayft.config.load import load_pipeline

pytestmark = pytest.mark.ray


def _ppo_config(tmp_path, model: str, steps: int, extra: list[str]):
    return load_pipeline(None, [
        f"model.name={model}", f"data.path={DEMO_DATA}", "data.eval_split=0", f"storage.path={tmp_path}",
        "run_name=ppo", "eval.enabled=false",
        "stages=[{type: ppo, rewards: ['rayft.rewards:letter_share']}]",
        f"stages.0.training.max_steps={steps}", "stages.0.training.logging_steps=1", *extra])


@pytest.mark.parametrize("reference", ["shared", "copy"])
def test_ppo_mechanics_on_two_workers(ray_cluster, tmp_path, reference):
    """`shared`: the reference is the policy with its adapter disabled; `copy`: a separate frozen model.
    Either way the first step's KL is 0 (a fresh LoRA adapter starts as the identity)."""
    from rayft.train.launch import run_pipeline

    loaded = _ppo_config(tmp_path, "builtin:tiny-random", 3, [
        "data.template=alpaca", "stages.0.training.batch_size=4", "stages.0.max_new_tokens=8",
        "stages.0.minibatch_size=2", "stages.0.ppo_epochs=2", "stages.0.training.lr=1e-3",
        f"stages.0.reference={reference}", "stages.0.kl_target=0.5", "stages.0.kl_horizon=8",
        "tracking.wandb.project=rayft-ppo", "tracking.wandb.mode=offline"])
    run_pipeline(loaded)
    stage_dir = tmp_path / "ppo" / "ppo"
    summary = json.loads((stage_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 3
    history = summary["ppo_history"]
    assert [h["step"] for h in history] == [1, 2, 3]
    for key in ("reward", "kl", "entropy", "clip_fraction", "value_loss", "policy_loss", "generation_s",
                "training_s", "generation_share"):
        assert all(key in h for h in history), key
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-4), "before any update the policy is the reference"
    assert history[-1]["kl"] > 0, "updates move the policy away from the reference"
    assert all(h["replica_drift"] < 1e-6 for h in history), "all-reduced gradients keep replicas identical"
    # Adaptive KL: starts at kl_coef and follows the controller on the all-worker mean KL (batch 4 x 2 workers).
    from rayft.rl.ppo_core import adaptive_kl_coef

    assert history[0]["kl_coef"] == pytest.approx(0.05)
    for before, after in zip(history, history[1:]):
        assert after["kl_coef"] == pytest.approx(adaptive_kl_coef(before["kl_coef"], before["kl"], 0.5, 8, 8))
    assert history[1]["kl_coef"] == pytest.approx(0.04), "KL 0 at step 1 is below target: -20%"
    assert (stage_dir / "adapter" / "adapter_config.json").is_file()
    assert (stage_dir / "adapter" / "value_head.pt").is_file()
    assert list((stage_dir / "tensorboard").glob("events.out.tfevents.*"))
    # tracking.wandb (offline): PPO's own loop logs its scalars per step into the stage's one W&B run.
    from wandb_reader import read_offline_run

    run = read_offline_run(stage_dir)
    assert run["name"] == "ppo/ppo" and run["group"] == "ppo" and run["project"] == "rayft-ppo"
    rewards = {row["train/global_step"]: row["ppo/reward"] for row in run["history"] if "ppo/reward" in row}
    assert sorted(rewards) == [1, 2, 3]
    assert rewards[3] == pytest.approx(history[-1]["reward"], rel=1e-5)


@pytest.mark.embedded
@pytest.mark.slow  # ~300 s; its last result is in docs/contributing.md ("Tests marked slow")
def test_ppo_raises_a_programmatic_reward(ray_cluster, tmp_path):
    """SmolLM2 answers order messages at length; rewarding short answers must raise the reward."""
    from rayft.train.launch import run_pipeline

    loaded = _ppo_config(tmp_path, "builtin:smollm2-135m-instruct", 8, [
        "data.template=chat", "stages.0.rewards=['rayft.rewards:short_answer']",
        "stages.0.training.batch_size=4", "stages.0.max_new_tokens=32", "stages.0.minibatch_size=4",
        "stages.0.training.lr=3e-4", "stages.0.kl_coef=0.02"])
    run_pipeline(loaded)
    summary = json.loads((tmp_path / "ppo" / "ppo" / "summary.json").read_text())
    assert summary["reward_last"] > summary["reward_first"] + 0.1, summary["ppo_history"]
