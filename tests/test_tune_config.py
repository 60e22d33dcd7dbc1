"""The `tune:` section: domain syntax, dotted paths that must name config fields, values that must
give valid configs, the plan checks, how a trial's config is built, and the resource plan."""

from __future__ import annotations

import pytest
import yaml

from conftest import DEMO_DATA
from rayft.cli import main
from rayft.config.load import load_pipeline
from rayft.core.errors import ConfigError
from rayft.schema.search_space import Domain, parse_domain
from rayft.tune.sweep import expected_trials, load_sweep, param_space, plan_concurrency
from rayft.tune.trial import trial_config

BASE = {
    "model": {"name": "builtin:tiny-random"},
    "data": {"path": str(DEMO_DATA), "template": "alpaca", "eval_split": 16},
    "training": {"max_steps": 8, "eval_steps": 2},
    "scaling": {"num_workers": 1},
}


def write(tmp_path, tune: dict, **sections) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, **sections, "tune": tune}))
    return str(path)


@pytest.mark.parametrize("spec, kind, args", [
    ("choice[4, 8, 16]", "choice", (4, 8, 16)),
    ("choice[[q_proj, v_proj], all-linear]", "choice", (["q_proj", "v_proj"], "all-linear")),
    ("grid[1e-4, 3e-4]", "grid", (1e-4, 3e-4)),  # YAML reads 1e-4 as a string; it is a number here
    ("loguniform[1e-5, 1e-3]", "loguniform", (1e-5, 1e-3)),
    ("uniform[0, 0.2]", "uniform", (0, 0.2)),
    ("randint[4, 32]", "randint", (4, 32)),
])
def test_domains_parse(spec, kind, args):
    assert parse_domain(spec) == Domain(kind, args)


def test_randint_includes_its_upper_end():
    domain = parse_domain("randint[2, 3]").to_tune()
    assert {domain.sample() for _ in range(200)} == {2, 3}


@pytest.mark.parametrize("spec, message", [
    ("logunif[1e-5, 1e-3]", "did you mean 'loguniform'"),
    ("loguniform[0, 1]", "low > 0"),
    ("uniform[1, 1]", "low < high"),
    ("uniform[a, 1]", "two numbers"),
    ("randint[1, 2.5]", "whole numbers"),
    ("choice[]", "at least one value"),
    ("[4, 8]", "expected KIND[...]"),
])
def test_bad_domains_say_why(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_domain(spec)


def test_unknown_path_is_named_with_a_hint():
    with pytest.raises(ConfigError) as err:
        load_pipeline(None, ['tune.search_space={adapter.alhpa: "choice[4, 8]", training.lr: "uniform[1e-4, 1e-3]"}'])
    assert "tune.search_space: 'adapter.alhpa': 'alhpa' is not a field of adapter; did you mean 'alpha'?" in str(err.value)


@pytest.mark.parametrize("path, message", [
    ("adapter.r.x", "'adapter.r' is a value, not a section"),
    ("scaling.num_workers", "scaling cannot be searched"),
    ("trainin.lr", "did you mean 'training'"),
])
def test_paths_that_are_not_fields(path, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline(None, [f'tune.search_space={{{path}: "choice[1, 2]"}}'])


def test_nested_and_stage_paths_are_fields():
    loaded = load_pipeline(None, ['tune.search_space={stages.0.training.lr: "choice[1e-4]", '
                                'data.columns.question: "choice[q]", adapter.target_modules: "choice[[q_proj]]"}'])
    assert list(loaded.pipeline.tune.search_space) == ["stages.0.training.lr", "data.columns.question",
                                                       "adapter.target_modules"]


def test_every_value_must_give_a_valid_config(tmp_path):
    config = write(tmp_path, {"search_space": {"adapter.r": "choice[4, 0]"}})
    with pytest.raises(ConfigError) as err:
        load_sweep(config)
    assert "tune.search_space.adapter.r: the value 0 gives an invalid config" in str(err.value)
    assert "adapter.r: Input should be greater than or equal to 1" in str(err.value)
    config = write(tmp_path, {"search_space": {"adapter.dropout": "uniform[0, 1.5]"}})
    with pytest.raises(ConfigError, match="the value 1.5 gives an invalid config"):
        load_sweep(config)
    config = write(tmp_path, {"search_space": {"stages.0.beta": "choice[0.1]"}})  # sft has no beta
    with pytest.raises(ConfigError, match="stages.0.beta: unknown key"):
        load_sweep(config)


@pytest.mark.parametrize("tune, sections, message", [
    ({"search_space": {"training.lr": "grid[1e-4, 1e-3]"}}, {}, "grid\\[...\\] needs search_alg grid or random"),
    ({"search_space": {"training.lr": "loguniform[1e-4, 1e-3]"}, "search_alg": "grid"}, {},
     "search_alg grid needs listed values"),
    ({"search_space": {"training.lr": "choice[1e-4]"}}, {"training": {"max_steps": 8}},
     "training.eval_steps: tune.metric 'eval_loss'"),
    ({"search_space": {"training.lr": "choice[1e-4]"}}, {"training": {"eval_steps": 2}},
     "training.max_steps: scheduler 'asha'"),
    ({"search_space": {"training.lr": "choice[1e-4]"}}, {"stages": [{"type": "sft"}, {"type": "dpo"}]},
     "stages: a sweep tunes one stage"),
    ({"search_space": {"training.lr": "choice[1e-4]"}, "metric": "train_loss"}, {},
     "tune.metric: 'train_loss' is not an evaluation metric"),
    ({"search_space": {"training.lr": "choice[1e-4]"}}, {"data": {**BASE["data"], "eval_split": 0}},
     "data.eval_split: tune.metric 'eval_loss' needs held-out rows"),
    # pbt: what a running trial cannot change, and what segments need
    ({"search_space": {"training.lr": "choice[1e-4]"}, "scheduler": "pbt"}, {},
     "tune.search_alg: pbt starts its population from random samples"),
    ({"search_space": {"adapter.r": "choice[4, 8]"}, "scheduler": "pbt", "search_alg": "random"},
     {"training": {**BASE["training"], "lr_scheduler": "constant"}}, "tune.search_space.adapter.r: pbt can only"),
    ({"search_space": {"training.max_steps": "choice[4, 8]"}, "scheduler": "pbt", "search_alg": "random"},
     {"training": {**BASE["training"], "lr_scheduler": "constant"}}, "tune.search_space.training.max_steps: pbt"),
    ({"search_space": {"training.lr": "loguniform[1e-4, 1e-3]"}, "scheduler": "pbt", "search_alg": "random"}, {},
     "training.lr_scheduler: pbt changes the learning rate"),
    ({"search_space": {"training.lr": "loguniform[1e-4, 1e-3]"}, "scheduler": "pbt", "search_alg": "random"},
     {"training": {**BASE["training"], "lr_scheduler": "constant"}, "adapter": {"type": "full"}},
     "adapter.type: pbt copies LoRA adapters"),
    ({"search_space": {"training.lr": "loguniform[1e-4, 1e-3]"}, "scheduler": "pbt", "search_alg": "random",
      "perturbation_interval": 8}, {"training": {**BASE["training"], "lr_scheduler": "constant"}},
     "tune.perturbation_interval: 8 steps leaves no room"),
])
def test_plan_checks(tmp_path, tune, sections, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(write(tmp_path, tune, **sections))


def test_pbt_plan_and_scheduler(tmp_path):
    """A valid PBT sweep: trials perturb training values every perturbation_interval steps (default
    eval_steps); grid values become PBT's resampling lists."""
    from rayft.tune.sweep import make_scheduler

    config = write(tmp_path, {"search_space": {"training.lr": "grid[1e-4, 1e-3]", "training.weight_decay":
                                               "uniform[0, 0.1]"}, "scheduler": "pbt", "search_alg": "random"},
                   training={**BASE["training"], "lr_scheduler": "constant"})
    loaded, spec = load_sweep(config)
    assert spec.scheduler == "pbt"
    scheduler = make_scheduler(loaded.pipeline, param_space(spec, "random"))
    assert type(scheduler).__name__ == "StepBoundedPBT" and scheduler._max_steps == 8
    assert scheduler._perturbation_interval == 2 and scheduler._time_attr == "global_step"
    assert scheduler._hyperparam_mutations["training.lr"] == [1e-4, 1e-3]


def test_no_tune_section(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match="no `tune:` section"):
        load_sweep(str(path))


def test_cli_reports_a_bad_sweep_config_with_exit_2(tmp_path, capsys):
    config = write(tmp_path, {"search_space": {"adapter.rr": "choice[4]"}})
    assert main(["tune", config]) == 2
    assert "'adapter.rr': 'rr' is not a field of adapter" in capsys.readouterr().err


def test_trial_config_sets_values_like_set(tmp_path):
    """A top-level training value reaches the stage (as --set would), the tune section is gone,
    data paths resolve against the config file, and the sweep name defaults to the file name."""
    config = write(tmp_path, {"search_space": {"training.lr": "loguniform[1e-5, 1e-3]", "adapter.r": "choice[4, 8]"}},
                   data={**BASE["data"], "path": "data.jsonl"})
    loaded, spec = load_sweep(config, ["storage.path=" + str(tmp_path / "out")])
    assert spec.sweep_dir == tmp_path / "out" / "sweep"
    trial = trial_config(spec, {"training.lr": 3e-5, "adapter.r": 4}).pipeline
    assert trial.stages[0].training.lr == 3e-5 and trial.adapter.r == 4 and trial.tune is None
    assert trial.stages[0].data.path == str(tmp_path / "data.jsonl")
    assert loaded.pipeline.stages[0].training.lr == 2e-4  # the base config is untouched
    assert set(param_space(spec, "optuna")) == {"training.lr", "adapter.r"}


def test_trials_never_oversubscribe():
    loaded = load_pipeline(None, ['tune.search_space={training.lr: "choice[1e-4]"}', "scaling.num_workers=1"])
    assert plan_concurrency(loaded.pipeline, {"CPU": 2}) == (2, {"CPU": 1})
    loaded.pipeline.tune.max_concurrent_trials = 8
    assert plan_concurrency(loaded.pipeline, {"CPU": 2})[0] == 2
    loaded.pipeline.tune.max_concurrent_trials = 1
    assert plan_concurrency(loaded.pipeline, {"CPU": 2})[0] == 1
    loaded = load_pipeline(None, ['tune.search_space={training.lr: "choice[1e-4]"}', "scaling.num_workers=2",
                                "scaling.use_gpu=true", "scaling.resources_per_worker={CPU: 4}"])
    assert plan_concurrency(loaded.pipeline, {"CPU": 32, "GPU": 5}) == (2, {"CPU": 8, "GPU": 2})


def test_data_problems_fail_before_any_trial(tmp_path):
    """The base config's data is prepared once on the driver, so rows that cannot train fail the
    sweep with exit 2 before Ray or any trial starts."""
    from rayft.core.errors import DataError
    from rayft.tune.sweep import check_sweep_data

    config = write(tmp_path, {"search_space": {"training.lr": "choice[1e-4]"}},
                   data={**BASE["data"], "max_length": 16})
    _, spec = load_sweep(config)
    with pytest.raises(DataError, match="no usable training rows"):
        check_sweep_data(spec)


def test_schedulers_count_optimizer_steps():
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    from rayft.tune.sweep import make_scheduler

    loaded = load_pipeline(None, ['tune.search_space={training.lr: "choice[1e-4]"}', "training.max_steps=24",
                                "training.eval_steps=4"])
    tune = loaded.pipeline.tune
    asha = make_scheduler(loaded.pipeline, {})
    assert isinstance(asha, AsyncHyperBandScheduler) and asha._time_attr == "global_step"
    assert asha._max_t == 24 and len(asha._brackets) == 1 and not asha._stop_last_trials
    assert [milestone for milestone, _ in asha._brackets[0]._rungs] == [16, 8, 4]  # grace = eval_steps, factor 2
    tune.scheduler = "hyperband"
    assert len(make_scheduler(loaded.pipeline, {})._brackets) == 3
    tune.scheduler = "none"
    assert isinstance(make_scheduler(loaded.pipeline, {}), FIFOScheduler)


@pytest.mark.parametrize("tune, expected", [
    ({"search_alg": "grid", "search_space": {"training.lr": "grid[1e-4, 3e-4]", "adapter.r": "choice[4, 8, 16]"}}, 6),
    ({"search_alg": "grid", "num_samples": 2, "search_space": {"training.lr": "grid[1e-4, 3e-4]"}}, 4),
    ({"search_alg": "random", "num_samples": 3, "search_space": {"training.lr": "grid[1e-4, 3e-4]",
                                                                  "adapter.r": "choice[4, 8]"}}, 6),
    ({"search_alg": "optuna", "num_samples": 5, "search_space": {"adapter.r": "choice[4, 8]"}}, 5),
])
def test_expected_trials_tell_an_interrupted_sweep_from_a_finished_one(tmp_path, tune, expected):
    """Tune creates grid trials lazily, so a Ctrl-C can leave some never created; the sweep compares
    the trials that ended with how many it should have."""
    loaded, spec = load_sweep(write(tmp_path, tune), ["storage.path=" + str(tmp_path / "out")])
    assert expected_trials(spec, loaded.pipeline.tune) == expected


@pytest.mark.parametrize("name", ["tune_tiny.yaml", "tune_lamini.yaml", "tune_pbt_tiny.yaml"])
def test_shipped_sweep_configs_pass_the_sweep_checks(name):
    from conftest import REPO, SHARED_DATA

    if "lamini" in name and not (SHARED_DATA / "lamini_docs.jsonl").is_file():
        pytest.skip(f"{SHARED_DATA / 'lamini_docs.jsonl'} is absent (../shared/data is not beside this checkout)")
    loaded, spec = load_sweep(REPO / "jobs" / "configs" / name)
    assert spec.space and spec.scheduler == loaded.pipeline.tune.scheduler


def test_pbt_history_comes_from_the_trial_schedule_when_tunes_copy_lost_a_report(tmp_path):
    """Tune copies a PBT trial's result.json back from the storage path when it restarts the trial
    from a checkpoint; a report made since the last sync is then missing from Ray's dataframe (seen
    in CI: history [8] instead of [4, 8]). The trial's own pbt_schedule.json keeps every segment."""
    import json
    from types import SimpleNamespace

    import pandas as pd

    from rayft.tune.results import _row
    from rayft.tune.trial import SweepSpec

    trial = tmp_path / "trial_abc"
    (trial / "sft").mkdir(parents=True)
    (trial / "sft" / "summary.json").write_text(json.dumps({"status": "completed", "global_step": 8,
                                                            "eval_loss": 2.5}))
    (trial / "pbt_schedule.json").write_text(json.dumps([
        {"event": "segment", "steps": [0, 4], "params": {"training.lr": 1e-4}, "metrics": {"eval_loss": 3.0}},
        {"event": "restored", "at_step": 4, "from_trial": "def", "params": {"training.lr": 2e-4}},
        {"event": "segment", "steps": [4, 8], "params": {"training.lr": 2e-4}, "metrics": {"eval_loss": 2.5}},
    ]))
    ray_frame = pd.DataFrame({"global_step": [8], "eval_loss": [2.5], "time_total_s": [12.0]})  # step 4 lost
    result = SimpleNamespace(path=str(trial), metrics_dataframe=ray_frame, error=None,
                             config={"training.lr": 2e-4})
    spec = SweepSpec(raw={}, source=None, space={"training.lr": "loguniform[1e-5, 1e-3]"}, sweep_dir=tmp_path,
                     scheduler="pbt", perturbation_interval=4)
    row = _row(result, "eval_loss", "min", spec, "sft", {})
    assert row.history == [(4, 3.0), (8, 2.5)] and row.status == "completed" and row.best_metric == 2.5

    (trial / "pbt_schedule.json").write_text("{not json")  # a damaged schedule: Ray's record alone
    assert _row(result, "eval_loss", "min", spec, "sft", {}).history == [(8, 2.5)]


def test_a_stop_recorded_by_the_sweep_is_not_overwritten_by_the_failure_it_causes(tmp_path):
    """Stopping a trial removes its workers; the trial's driver may report that failure after the
    sweep has recorded the stop (seen once in CI: same second). The stop stays; a stage that was
    not stopped is marked failed."""
    from rayft.train.launch import record_failure
    from rayft.records.rundir import read_summary, write_summary

    stopped, running = tmp_path / "stopped" / "sft", tmp_path / "running" / "sft"
    for stage_dir in (stopped, running):
        stage_dir.mkdir(parents=True)
        write_summary(stage_dir, status="running")
    write_summary(stopped, status="stopped", error="stopped early by the asha scheduler at step 4")
    for stage_dir in (stopped, running):
        record_failure(stage_dir, "The actor is dead: its placement group was removed", 1.0)
    assert read_summary(stopped)["status"] == "stopped"
    assert read_summary(stopped)["error"].startswith("stopped early")
    assert read_summary(running)["status"] == "failed" and "placement group" in read_summary(running)["error"]
