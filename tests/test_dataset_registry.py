"""The dataset registry: `data: {dataset: name}` filled from datasets.yaml (path relative to the
registry, format, columns, held-out file, hub split), explicit config fields winning, and errors
that name the config field or the registry entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import write_jsonl
from rayft.config.load import load_pipeline
from rayft.core.errors import ConfigError

ROWS = [{"q": f"What is {i} squared?", "a": str(i * i)} for i in range(12)]


def _setup(tmp_path: Path, config: str, registry: str | None = None) -> Path:
    (tmp_path / "sets").mkdir()
    write_jsonl(tmp_path / "sets" / "squares.jsonl", ROWS)
    write_jsonl(tmp_path / "sets" / "squares_test.jsonl", ROWS[:3])
    (tmp_path / "datasets.yaml").write_text(registry or (
        "datasets:\n"
        "  squares:\n"
        "    path: sets/squares.jsonl\n"
        "    format: qa\n"
        "    columns: {question: q, answer: a}\n"
        "    eval_path: sets/squares_test.jsonl\n"
        "    description: squares of small numbers\n"
        "  hub:\n"
        "    path: hf:someone/some-set\n"
        "    split: test\n"))
    path = tmp_path / "conf" / "c.yaml"
    path.parent.mkdir()
    path.write_text(config)
    return path


def test_a_dataset_name_fills_path_format_columns_and_held_out_file(tmp_path, tiny_tokenizer):
    from rayft.data.build import prepare

    config = _setup(tmp_path, "model: {name: builtin:tiny-random}\n"
                              f"data: {{dataset: squares, registry: {tmp_path / 'datasets.yaml'}}}\n")
    data = load_pipeline(config).pipeline.stages[0].data
    assert data.path == str(tmp_path / "sets" / "squares.jsonl") and data.dataset is None
    assert data.format == "qa" and data.columns == {"question": "q", "answer": "a"}
    assert data.eval_path == str(tmp_path / "sets" / "squares_test.jsonl")
    prepared = prepare(data, tiny_tokenizer)
    assert len(prepared.train) == 12 and len(prepared.eval) == 3 and prepared.stats["format"] == "qa"


def test_explicit_fields_win_and_a_stage_with_its_own_path_does_not_inherit_the_dataset(tmp_path):
    config = _setup(tmp_path, "model: {name: builtin:tiny-random}\n"
                              "data: {dataset: squares, registry: ../datasets.yaml, format: auto, "
                              "columns: {answer: other}}\n"
                              "stages: [{type: sft}, {type: sft, name: own, data: {path: own.jsonl}}]\n")
    first, own = (s.data for s in load_pipeline(config).pipeline.stages)
    assert first.format == "auto" and first.columns == {"question": "q", "answer": "other"}
    assert own.path == str(config.parent / "own.jsonl") and own.dataset is None


def test_registry_next_to_the_config_and_hub_split(tmp_path):
    config = _setup(tmp_path, "model: {name: builtin:tiny-random}\ndata: {dataset: hub}\n")
    (config.parent / "datasets.yaml").write_text((tmp_path / "datasets.yaml").read_text())
    assert load_pipeline(config).pipeline.data.path == "hf:someone/some-set:test"


@pytest.mark.parametrize("config, registry, message", [
    ("data: {dataset: squars, registry: ../datasets.yaml}", None,
     "data.dataset: 'squars' is not in {tmp}/datasets.yaml (it has: squares, hub); did you mean 'squares'?"),
    ("data: {dataset: squares}", None, "data.dataset: 'squares' needs a dataset registry, and {tmp}/conf/datasets.yaml"),
    ("stages: [{type: sft, data: {dataset: x, registry: ../datasets.yaml}}]", "datasets: {x: {path: a.jsonl, fromat: qa}}",
     "{tmp}/datasets.yaml: invalid dataset registry:\n  datasets.x.fromat: Extra inputs are not permitted"),
    ("data: {dataset: squares, path: a.jsonl}", None, "give one of `path`, `sources` or `dataset`, not path and dataset"),
])
def test_errors_name_the_field_or_the_entry(tmp_path, config, registry, message):
    path = _setup(tmp_path, "model: {name: builtin:tiny-random}\n" + config + "\n", registry)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    assert message.format(tmp=tmp_path) in str(err.value)


def test_data_datasets_lists_the_registry(tmp_path, capsys):
    from rayft.cli import main

    _setup(tmp_path, "")
    (tmp_path / "sets" / "squares_test.jsonl").unlink()
    (tmp_path / "sets" / "squares.jsonl").unlink()
    assert main(["data", "datasets", str(tmp_path / "datasets.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"squares: {tmp_path}/sets/squares.jsonl (format qa)  MISSING: {tmp_path}/sets/squares.jsonl" in out
    assert "squares of small numbers" in out and "hub: hf:someone/some-set:test (format auto)" in out
    assert main(["data", "datasets", str(tmp_path / "nothing.yaml")]) == 2


def test_every_way_in_fills_the_dataset_in_a_sweep_its_trials_the_ui_and_serving(tmp_path):
    """One loader for every YAML -> config path: a sweep (and each trial built from it) over a
    config that names its data by `data.dataset` gets the registry's file, as `rayft train` does;
    so do the web UI's form and a Serve app's args."""
    from rayft.serve.app import apps_from_file
    from rayft.tune.sweep import load_sweep
    from rayft.tune.trial import trial_config
    from rayft.ui.config_form import check_config

    squares = str(tmp_path / "sets" / "squares.jsonl")
    text = ("model: {name: builtin:tiny-random}\n"
            "data: {dataset: squares, registry: ../datasets.yaml, eval_split: 2}\n"
            "training: {max_steps: 4, eval_steps: 2}\n")
    config = _setup(tmp_path, text + "tune: {search_space: {training.lr: 'choice[1e-4, 2e-4]'}, num_samples: 2}\n")
    loaded, spec = load_sweep(config)
    assert loaded.pipeline.stages[0].data.path == squares
    trial = trial_config(spec, {"training.lr": 2e-4})
    assert trial.pipeline.stages[0].data.path == squares and trial.pipeline.stages[0].training.lr == 2e-4
    assert trial.pipeline.stages[0].data.format == "qa" and trial.pipeline.tune is None

    ui_text = text.replace("../datasets.yaml", str(tmp_path / "datasets.yaml"))
    from_form, problem = check_config(ui_text, [tmp_path], tmp_path / "runs")
    assert problem is None and from_form.pipeline.stages[0].data.path == squares

    serve_file = tmp_path / "conf" / "serve.yaml"
    serve_file.write_text(yaml.safe_dump({"applications": [{"name": "a", "import_path": "rayft.serve.app:build_app",
                                                             "args": yaml.safe_load(ui_text)}]}))
    apps, _ = apps_from_file(str(serve_file), ["serve.app_name=x"])
    assert apps[0]["args"]["serve"]["app_name"] == "x"  # the overrides still reach the app's args
