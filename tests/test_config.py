"""Config schema: valid configs load, invalid ones fail with a message naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from rayft.config.load import apply_override, json_schema, load_pipeline, parse_override, validate
from rayft.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml")) + [REPO / "rayft" / "demo" / "demo.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    loaded = load_pipeline(path)
    assert loaded.pipeline.stages, "a pipeline has at least one stage"
    for stage in loaded.pipeline.stages:
        assert Path(stage.data.path).is_absolute(), "data paths resolve against the config's folder"


def test_defaults_and_stage_overrides():
    p = validate({"training": {"lr": 1e-3, "batch_size": 4},
                  "stages": [{"type": "sft", "training": {"lr": 5e-5}}, {"type": "sft", "name": "again"}]})
    assert p.model.name == "builtin:smollm2-135m-instruct"
    assert [s.name for s in p.stages] == ["sft", "again"]
    assert p.stages[0].training.lr == 5e-5 and p.stages[0].training.batch_size == 4
    assert p.stages[1].training.lr == 1e-3


def test_no_stages_means_one_sft_stage_with_top_level_settings():
    p = validate({"training": {"max_steps": 7}})
    assert [s.type for s in p.stages] == ["sft"] and p.stages[0].training.max_steps == 7


def test_set_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {path: d.jsonl}\nstages: [{type: sft}]\n")
    loaded = load_pipeline(cfg, ["training.lr=1e-4", "stages.0.training.max_steps=3", "adapter.target_modules=[q_proj]",
                               "scaling.resources_per_worker.CPU=2", "run_name=r1"])
    p = loaded.pipeline
    assert p.training.lr == 1e-4 and p.stages[0].training.lr == 1e-4
    assert p.stages[0].training.max_steps == 3
    assert p.adapter.target_modules == ["q_proj"]
    assert p.scaling.resources_per_worker == {"CPU": 2}
    assert p.run_name == "r1"
    assert p.data.path == str(tmp_path / "d.jsonl")


def test_parse_override_values():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    raw: dict = {}
    apply_override(raw, ["x", "y"], "z")
    assert raw == {"x": {"y": "z"}}


INVALID = [
    ({"trainig": {}}, "trainig: unknown key; did you mean 'training'?"),
    ({"training": {"lrr": 1}}, "training.lrr: unknown key; did you mean 'lr'?"),
    ({"stages": [{"type": "sft", "training": {"bach_size": 2}}]}, "stages.0.training.bach_size: unknown key; did you mean 'batch_size'?"),
    ({"stages": [{"type": "sfft"}]}, "stages.0: unknown stage type 'sfft'; did you mean 'sft'?"),
    ({"scaling": {"num_workers": 0}}, "scaling.num_workers: Input should be greater than or equal to 1"),
    ({"training": {"lr": -1}}, "training.lr: Input should be greater than 0"),
    ({"adapter": {"r": "big"}}, "adapter.r: Input should be a valid integer"),
    ({"adapter": {"type": "qlora5"}}, "adapter.type: Input should be 'lora', 'ia3' or 'full'"),
    ({"adapter": {"target_modules": []}}, "adapter.target_modules"),
    ({"data": {"format": "xml"}}, "data.format: Input should be"),
    ({"data": {"eval_split": 2.5}}, "data.eval_split: a count (>= 1) must be a whole number"),
    ({"data": {"truncation_side": "middle"}}, "data.truncation_side"),
    ({"stages": []}, "stages: List should have at least 1 item"),
    ({"stages": [{"type": "sft", "name": "a"}, {"type": "sft", "name": "a"}]}, "stages.1.name: 'a' is used by an earlier stage"),
    ({"run_name": "../escape"}, "run_name: String should match pattern"),
    ({"model": {"dtype": "int3"}}, "model.dtype"),
    ({"eval": {"max_new_tokens": 0}}, "eval.max_new_tokens"),
    # what a stage type refuses is refused when the config loads, not when its data is prepared
    ({"data": {"packing": True}, "stages": [{"type": "sft"}, {"type": "dpo"}]},
     "data.packing: the dpo stage trains on prompts / pairs and cannot pack"),
    ({"stages": [{"type": "sft"}, {"type": "kto", "data": {"packing": True}}]}, "stages.1.data.packing: the kto stage"),
    ({"stages": [{"type": "ppo", "rewards": ["rayft.rewards:short_answer"]}]},
     "training.max_steps: PPO runs a fixed number of rollout steps"),
]


@pytest.mark.parametrize("raw,expected", INVALID, ids=[e for _, e in INVALID])
def test_invalid_configs_name_the_field(raw, expected):
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert expected in str(err.value)


def test_top_level_error_reported_once_not_per_stage():
    with pytest.raises(ConfigError) as err:
        validate({"training": {"lrr": 1}, "stages": [{"type": "sft"}, {"type": "sft", "name": "b"}]})
    assert "(1 problem)" in str(err.value) and "stages." not in str(err.value)


@pytest.mark.parametrize("text,expected", [
    ("training.lr", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("a..b=1", "expected KEY=VALUE"),
])
def test_bad_override_syntax(text, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_override(text)


def test_override_into_a_missing_stage_index(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stages: [{type: sft}]\n")
    with pytest.raises(ConfigError, match="stages.3: expected a list index below 1"):
        load_pipeline(cfg, ["stages.3.type=sft"])


def test_yaml_errors_name_the_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  name: x\n training: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_pipeline(cfg)
    cfg.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_pipeline(cfg)
    with pytest.raises(ConfigError, match="config file not found"):
        load_pipeline(tmp_path / "missing.yaml")


def test_json_schema_is_valid_and_describes_the_sections():
    schema = json.loads(json_schema())
    Draft202012Validator.check_schema(schema)
    assert {"model", "adapter", "data", "stages", "training", "scaling", "storage", "eval"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    # A shipped config validates against the exported schema too (what an editor would check).
    raw = yaml.safe_load((REPO / "jobs" / "configs" / "sft_tiny.yaml").read_text())
    Draft202012Validator(schema).validate(raw)
