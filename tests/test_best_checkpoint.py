"""training.best and training.early_stopping: the config's checks, the record's logic
(rayft.records.best), and on the embedded model a run made to overfit that publishes the adapter
of its best evaluation, re-measured, and stops early."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import DEMO_DATA
from rayft.config.load import load_pipeline
from rayft.core.errors import ConfigError
from rayft.records.best import BEST_DIR, BEST_TAG, BestTracker, read_best


@pytest.mark.parametrize("overrides, message", [
    (["training.best={metric: eval_loss}"], "training.best: needs eval_steps"),
    (["training.early_stopping={patience: 2}"], "training.early_stopping: needs eval_steps"),
    (["training.best={}", "training.eval_steps=5", "data.eval_split=0"], "training.best: needs held-out rows"),
    (["training.best={}", "training.eval_steps=5", "training.strategy=deepspeed", "training.deepspeed.stage=3"],
     "training.best: not with sharded weights (ZeRO-3)"),
    (["stages=[{type: ppo, rewards: ['m:f'], training: {max_steps: 4, eval_steps: 2, early_stopping: {}}}]"],
     "stages.0.training.early_stopping: the PPO stage reports rollout rewards"),
    (["training.best={mode: lowest}", "training.eval_steps=5"], "training.best.mode"),
])
def test_the_config_refuses_what_cannot_choose(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_pipeline(None, overrides)
    assert message in str(err.value)


def test_metric_names_take_the_eval_prefix_and_early_stopping_alone_watches_eval_loss():
    training = load_pipeline(None, ["training.best={metric: accuracy, mode: max}", "training.eval_steps=5"]
                             ).pipeline.stages[0].training
    assert training.selection().key == "eval_accuracy" and training.selection().mode == "max"
    alone = load_pipeline(None, ["training.early_stopping={patience: 2}", "training.eval_steps=5"]
                          ).pipeline.stages[0].training
    assert alone.best is None and (alone.selection().key, alone.selection().mode) == ("eval_loss", "min")


def _state(step, max_steps=100):
    return SimpleNamespace(global_step=step, max_steps=max_steps)


def _evaluate(tracker, step, value, control=None, max_steps=100):
    control = control or SimpleNamespace(should_training_stop=False)
    tracker.on_evaluate(None, _state(step, max_steps), control, metrics={"eval_loss": value, "epoch": 1.0},
                        model="weights")
    return control


def test_the_record_keeps_the_best_saves_on_improvement_and_stops_after_patience(tmp_path):
    saved = []

    def save(model, folder, tag):
        saved.append(tag["step"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / BEST_TAG).write_text(json.dumps(tag))

    tracker = BestTracker(tmp_path, 0, "eval_loss", "min", keep_weights=True, patience=2, min_delta=0.05,
                          save=save, log=lambda line: None)
    for step, value in [(10, 2.0), (20, 1.5), (30, 1.48), (40, 1.6)]:
        control = _evaluate(tracker, step, value)
    # 1.48 is better (so it is the best and saved) but not by more than min_delta: no improvement for
    # early stopping; 1.6 is the second evaluation without one, so training stops at step 40
    assert saved == [10, 20, 30] and tracker.best_step() == 30
    assert control.should_training_stop and tracker.stopped_early_at == 40
    record = read_best(tmp_path)
    assert record["best_step"] == 30 and record["stopped_early_at"] == 40 and list(record["history"]) == ["10", "20",
                                                                                                          "30", "40"]
    out = tracker.summary({"eval_loss": 1.6})
    assert out["best"] == {"metric": "eval_loss", "mode": "min", "step": 30, "value": 1.48, "last_step": 40,
                           "last_value": 1.6, "published": "best"}
    assert out["eval_loss"] == 1.48 and out["stopped_early_at"] == 40


def test_a_resumed_stage_keeps_its_best_and_redoes_later_evaluations(tmp_path):
    def save(model, folder, tag):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / BEST_TAG).write_text(json.dumps(tag))

    first = BestTracker(tmp_path, 0, "eval_loss", "min", keep_weights=True, save=save)
    for step, value in [(10, 2.0), (20, 1.2), (30, 1.1)]:
        _evaluate(first, step, value)
    # the worker group restarts from the checkpoint at step 25: evaluation 30 is redone, 10 and 20 stand
    second = BestTracker(tmp_path, 0, "eval_loss", "min", keep_weights=True, save=save)
    second.on_train_begin(None, _state(25), None)
    assert sorted(second.history) == [10, 20] and second.best_step() == 20
    _evaluate(second, 30, 1.3)  # came out differently this time: 20 stays the best
    assert second.best_step() == 20
    # best/ holds step 30's weights from the failed attempt: not the recorded best, so they are not
    # published (the last weights are)
    assert second.summary({"eval_loss": 1.3})["best"]["published"] == "last"
    assert json.loads((tmp_path / BEST_DIR / BEST_TAG).read_text())["step"] == 30


def test_an_unknown_metric_names_the_ones_there_are(tmp_path):
    tracker = BestTracker(tmp_path, 0, "eval_acuracy", "max", keep_weights=False)
    with pytest.raises(ConfigError, match=r"'eval_acuracy' is not among .* \(eval_loss\)"):
        _evaluate(tracker, 10, 1.0)


@pytest.mark.ray
@pytest.mark.embedded
@pytest.mark.slow  # ~175-280 s; its last result is in docs/contributing.md ("Tests marked slow")
def test_an_overfit_run_publishes_its_best_evaluation_and_stops_early(ray_cluster, tmp_path):
    """16 training rows, a high learning rate, 60 steps: the held-out loss falls, then rises as the
    model memorizes. The published adapter is the best evaluation's: its held-out loss, measured
    again by the stage's own Trainer, equals the recorded best and is below the last evaluation's;
    early stopping ended the stage before max_steps and said so."""
    from rayft.compute.training_args import training_kwargs
    from rayft.models.adapters import apply_adapter
    from rayft.models.loader import load_causal_lm, load_tokenizer, resolve_model
    from rayft.stages import WorkerContext, get_stage
    from rayft.train.launch import run_pipeline

    loaded = load_pipeline(None, [
        "model.name=builtin:smollm2-135m-instruct", f"data.path={DEMO_DATA}", "data.template=alpaca",
        "data.max_rows=32", "data.eval_split=16", "data.max_length=128", "scaling.num_workers=1",
        "training.lr=3e-3", "training.max_steps=60", "training.batch_size=4", "training.eval_batch_size=16",
        "training.eval_steps=4", "training.lr_scheduler=constant", "training.best={metric: eval_loss, mode: min}",
        "training.gradient_checkpointing=false",  # memory is no concern here; time is
        "training.early_stopping={patience: 3}", "eval.enabled=false", f"storage.path={tmp_path}", "run_name=overfit"])
    result = run_pipeline(loaded)
    summary = result.stages[0]
    best = summary["best"]
    assert best["published"] == "best" and best["step"] < best["last_step"], best
    assert best["value"] < best["last_value"]
    assert summary["stopped_early_at"] == best["last_step"] < 60
    assert summary["global_step"] == summary["stopped_early_at"]
    assert summary["eval_loss"] == best["value"]  # the figures of what is published

    # Re-measure: the base with the published adapter, evaluated by the sft stage's own Trainer
    stage = loaded.pipeline.stages[0]
    path = resolve_model(loaded.pipeline.model.name)
    tokenizer = load_tokenizer(path)
    impl = get_stage("sft")
    data = impl.prepare_data(stage, tokenizer)
    adapter = loaded.pipeline.adapter.model_copy(update={"init_from": str(result.run_dir / "sft" / "adapter")})
    model = apply_adapter(load_causal_lm(path, loaded.pipeline.model), adapter)
    args = training_kwargs(stage.training.model_copy(update={"best": None, "early_stopping": None}),
                           output_dir=str(tmp_path / "remeasure"), on_gpu=False, has_eval=True)
    trainer = impl.build_trainer(WorkerContext(loaded.pipeline, stage, model, tokenizer, data, args, False,
                                               result.run_dir))
    assert trainer.evaluate()["eval_loss"] == pytest.approx(best["value"], rel=1e-4)
