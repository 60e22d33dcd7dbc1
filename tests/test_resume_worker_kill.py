"""A real SIGKILL of a Ray Train worker process mid-run: with scaling.max_failures 1 the worker
group restarts, resumes from the last registered checkpoint (global step, optimizer, scheduler,
RNG, data position) and ends at exactly training.max_steps with a complete adapter."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from rayft.config.load import load_pipeline
from rayft.records.attempts import read_attempts
from conftest import DEMO_DATA
from resilience import TINY_SFT, assert_adapter_loads, current_step, logged_steps, registered_steps, wait_for

pytestmark = pytest.mark.ray

MAX_STEPS, SAVE_STEPS = 10, 2


def start_run(loaded) -> tuple[threading.Thread, dict]:
    """run_pipeline in a thread (so the test can kill a worker meanwhile); its result or error lands
    in the returned dict."""
    from rayft.train.launch import run_pipeline

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = run_pipeline(loaded)
        except BaseException as exc:  # noqa: BLE001 - reported by the test's assertions
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_killed_worker_resumes_from_last_checkpoint(ray_cluster, tmp_path, tiny_model_path):
    loaded = load_pipeline(None, [*TINY_SFT, f"storage.path={tmp_path}", "run_name=killed",
                                f"training.max_steps={MAX_STEPS}", f"training.save_steps={SAVE_STEPS}",
                                "scaling.max_failures=1"])
    thread, outcome = start_run(loaded)
    stage = tmp_path / "killed" / "sft"
    # After the first checkpoint is registered and the loss of a step past it is logged (so a
    # step is redone and its two losses can be compared; the step counter moves before the loss
    # is all-gathered and logged, so waiting on the counter alone can kill between the two).
    wait_for("a registered checkpoint and a logged step past it",
             lambda: registered_steps(stage) and max(logged_steps(stage), default=0) > max(registered_steps(stage)),
             alive=lambda: thread.is_alive() or pytest.fail(f"the run ended early: {outcome}"))
    checkpoint_step = max(registered_steps(stage))
    reached = current_step(stage)
    assert reached < MAX_STEPS, "the run finished before the test could kill a worker"
    victim = next(w for w in read_attempts(stage)[-1]["workers"] if w["rank"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)

    thread.join(timeout=900)
    assert not thread.is_alive(), "the restarted run did not finish"
    assert "error" not in outcome, f"the run failed: {outcome.get('error')}"
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == MAX_STEPS
    assert summary["restarts"] == 1 and summary["attempts"] == 2
    assert summary["resumed_from_step"] >= checkpoint_step > 0
    assert summary["resumed_from_step"] % SAVE_STEPS == 0
    assert 0 < summary["steps_redone"] <= SAVE_STEPS
    assert summary["workers"][1]["pid"] != victim["pid"], "a new worker process ran the second attempt"

    # The steps done twice give the same loss: weights, optimizer, scheduler, RNG and data order
    # were all restored (any one of them missing changes the loss of the redone steps).
    first, second = read_attempts(stage)
    losses = dict(map(tuple, summary["loss_history"]))
    redone = {step: loss for step, loss in second["previous_attempt_losses"] if step > summary["resumed_from_step"]}
    assert redone, "no loss was logged for a redone step"
    for step, loss in redone.items():
        assert losses[step] == pytest.approx(loss, rel=1e-4, abs=1e-5), (step, loss, losses[step])
    assert sorted(losses) == list(range(1, MAX_STEPS + 1)), "the loss history covers every step once"
    assert_adapter_loads(stage / "adapter", tiny_model_path)


def test_killed_ppo_worker_resumes(ray_cluster, tmp_path):
    """rayft's own PPO loop checkpoints too (weights, value head, optimizer, step, samplers, KL coefficient):
    after the kill it continues from its checkpoint instead of from step 1."""
    from rayft.train.launch import run_pipeline

    loaded = load_pipeline(None, [
        "model.name=builtin:tiny-random", f"data.path={DEMO_DATA}", "data.eval_split=0", "data.template=alpaca",
        f"storage.path={tmp_path}", "run_name=ppo", "eval.enabled=false", "scaling.max_failures=1",
        "stages=[{type: ppo, rewards: ['rayft.rewards:letter_share']}]", "stages.0.training.max_steps=6",
        "stages.0.training.save_steps=2", "stages.0.training.batch_size=4", "stages.0.max_new_tokens=8",
        "stages.0.minibatch_size=2", "stages.0.ppo_epochs=2", "stages.0.training.lr=1e-3",
        "stages.0.kl_target=0.5", "stages.0.kl_horizon=8"])
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_pipeline(loaded)), daemon=True)
    thread.start()
    stage = tmp_path / "ppo" / "ppo"
    wait_for("a registered PPO checkpoint and a step past it",
             lambda: registered_steps(stage) and current_step(stage) > max(registered_steps(stage)),
             alive=thread.is_alive)
    checkpoint_step = max(registered_steps(stage))
    assert current_step(stage) < 6, "the run finished before the test could kill a worker"
    os.kill(next(w for w in read_attempts(stage)[-1]["workers"] if w["rank"] == 1)["pid"], signal.SIGKILL)
    thread.join(timeout=900)
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 6 and summary["restarts"] == 1
    assert summary["resumed_from_step"] >= checkpoint_step > 0
    assert [h["step"] for h in summary["ppo_history"]] == [1, 2, 3, 4, 5, 6]
    assert (stage / "adapter" / "value_head.pt").is_file()
    # The adaptive KL coefficient was restored too: the controller's recurrence holds across the resume.
    from rayft.rl.ppo_core import adaptive_kl_coef

    history = summary["ppo_history"]
    for before, after in zip(history, history[1:]):
        assert after["kl_coef"] == pytest.approx(adaptive_kl_coef(before["kl_coef"], before["kl"], 0.5, 8, 8))


def test_a_killed_and_resumed_stage_keeps_its_best(ray_cluster, tmp_path, tiny_model_path):
    """training.best across a worker kill: the evaluations up to the checkpoint the stage resumes
    from stand, the later ones are redone (each step once in the record), and what is published is
    the best evaluation's weights."""
    from rayft.records.best import BEST_DIR, BEST_TAG, read_best
    loaded = load_pipeline(None, [*TINY_SFT, f"storage.path={tmp_path}", "run_name=best-killed", "data.eval_split=8",
                                  "training.max_steps=12", "training.save_steps=4", "training.eval_steps=2",
                                  "training.best={metric: eval_loss, mode: min}", "scaling.max_failures=1"])
    thread, outcome = start_run(loaded)
    stage = tmp_path / "best-killed" / "sft"
    wait_for("a registered checkpoint and a recorded evaluation past it",
             lambda: registered_steps(stage) and max(map(int, (read_best(stage) or {}).get("history", {})), default=0)
             > max(registered_steps(stage)),
             alive=lambda: thread.is_alive() or pytest.fail(f"the run ended early: {outcome}"))
    before = read_best(stage)["history"]
    checkpoint_step = max(registered_steps(stage))
    victim = next(w for w in read_attempts(stage)[-1]["workers"] if w["rank"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)

    thread.join(timeout=900)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["restarts"] == 1
    record = read_best(stage)
    history = {int(step): metrics["eval_loss"] for step, metrics in record["history"].items()}
    assert sorted(history) == list(range(2, 13, 2))  # every evaluation once, the redone ones included
    kept = {int(s): m["eval_loss"] for s, m in before.items() if int(s) <= summary["resumed_from_step"]}
    assert kept and all(history[s] == value for s, value in kept.items())  # from before the kill, kept
    best_step = min(history, key=history.get)
    assert summary["best"]["step"] == record["best_step"] == best_step and checkpoint_step > 0
    assert summary["best"]["published"] == "best" and summary["eval_loss"] == history[best_step]
    assert json.loads((stage / BEST_DIR / BEST_TAG).read_text())["step"] == best_step
    published = (stage / "adapter" / "adapter_model.safetensors").read_bytes()
    assert published == (stage / BEST_DIR / "adapter_model.safetensors").read_bytes()
    assert_adapter_loads(stage / "adapter", tiny_model_path)
