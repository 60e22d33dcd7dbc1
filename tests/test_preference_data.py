"""Data for the alignment stages: TRL's prompt/chosen/rejected columns with the SFT template,
clear errors on rows that are not pairs, KTO unpairing, GRPO prompts, the programmatic rewards,
and the config checks of the alignment stages."""

from __future__ import annotations

import pytest

from conftest import write_jsonl
from rayft.schema.sections import DataConfig
from rayft.config.load import validate
from rayft.data.preference_data import prepare_preference, prepare_prompts, unpair
from rayft.data.templates import prompt_for_generation, render, resolve_template
from rayft.core.errors import ConfigError, DataError

PAIRS = [{"prompt": f"What color is the sky on day {i}?", "chosen": "Blue.", "rejected": "Green, probably."}
         for i in range(10)]


def test_pairs_use_the_sft_template(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    data = prepare_preference(DataConfig(path=str(path), eval_split=2, max_length=64), tiny_tokenizer, stage="dpo")
    assert data.train.column_names == ["prompt", "chosen", "rejected"]
    assert len(data.train) == 8 and len(data.eval) == 2
    row = data.train[0]
    assert (row["chosen"], row["rejected"]) == ("Blue.", "Green, probably.")  # answer texts; TRL adds EOS
    # The prompt is exactly what SFT's template renders before the answer (the chat template by default).
    example = {"turns": [(row["prompt"].split("user\n")[1].split("<|im_end|>")[0], "Blue.")], "system": None}
    expected = prompt_for_generation(render(example, resolve_template("chat", "qa", tiny_tokenizer), tiny_tokenizer))
    assert row["prompt"] == expected and row["prompt"].endswith("<|im_start|>assistant\n")
    assert data.stats["template"] == "chat" and data.stats["train"]["rows"] == 8
    assert data.stats["train"]["too_long"] == 0 and data.stats["rows_read"] == 10


def test_explicit_template_and_too_long_pairs_are_counted(tmp_path, tiny_tokenizer):
    rows = [*PAIRS[:4], {"prompt": "long " * 80, "chosen": "a", "rejected": "b"}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = DataConfig(path=str(path), eval_split=0, template="qa", max_length=32)
    kept = prepare_preference(cfg, tiny_tokenizer, stage="dpo")
    assert kept.train[0]["prompt"] == "### Question:\nWhat color is the sky on day 0?\n\n### Answer:\n"
    assert kept.stats["train"]["too_long"] == 1 and len(kept.train) == 5  # DPO truncates, counted
    dropped = prepare_preference(cfg, tiny_tokenizer, stage="reward", drop_too_long=True)
    assert len(dropped.train) == 4 and dropped.stats["train"]["too_long_action"] == "dropped"


def test_rows_that_are_not_pairs_name_file_and_line(tmp_path, tiny_tokenizer):
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q?", "answer": "a"}, {"question": "r?", "answer": "b"}])
    with pytest.raises(DataError, match=rf"{qa}:1: the reward stage needs preference rows with "
                                        r"prompt/chosen/rejected \(this row is format 'qa'\)"):
        prepare_preference(DataConfig(path=str(qa), eval_split=0), tiny_tokenizer, stage="reward")


def test_packing_is_refused_for_pairs_when_the_config_loads(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    with pytest.raises(ConfigError, match="data.packing: the dpo stage"):
        validate({"data": {"path": str(path), "packing": True}, "stages": [{"type": "dpo"}]})


def test_kto_unpairing(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    pairs = prepare_preference(DataConfig(path=str(path), eval_split=0), tiny_tokenizer, stage="kto").train
    rows = list(unpair(pairs, seed=1))
    assert len(rows) == 2 * len(pairs) and set(rows[0]) == {"prompt", "completion", "label"}
    assert sorted((r["completion"], r["label"]) for r in rows if r["prompt"] == pairs[0]["prompt"]) == \
        [("Blue.", True), ("Green, probably.", False)]
    assert [r["label"] for r in rows] != [True, False] * len(pairs), "shuffled: neighbours are not the same pair"
    assert unpair(None) is None


def test_grpo_prompts_keep_the_row_fields(tmp_path, tiny_tokenizer):
    rows = [{"instruction": "Add", "input": f"{i} and {i}", "output": str(2 * i)} for i in range(6)]
    path = write_jsonl(tmp_path / "inst.jsonl", rows)
    data = prepare_prompts(DataConfig(path=str(path), eval_split=2), tiny_tokenizer, stage="grpo")
    row = data.train[0]
    assert row["prompt"].startswith("Below is an instruction") and row["prompt"].endswith("### Response:\n")
    assert row["reference"] == row["output"] and row["instruction"] == "Add"
    assert len(data.eval) == 2 and data.stats["train"]["rows"] == 4


def test_rewards():
    from rayft import rewards

    assert rewards.json_valid([], ['{"a": 1}', 'x {"a": 1} y', "nope", "[1]"]) == [1.0, 0.5, 0.0, 1.0]
    assert rewards.length_penalty([], ["", "x" * 50]) == [0.0, -0.5]
    assert rewards.exact_match([], [" 4 ", "5"], reference=["4", "4"]) == [1.0, 0.0]


def test_alignment_config_checks():
    def problem(raw):
        with pytest.raises(ConfigError) as err:
            validate(raw)
        return str(err.value)

    grpo = {"type": "grpo", "rewards": ["rayft.rewards:json_valid"], "num_generations": 3}
    assert "stages.0.num_generations" in problem({"stages": [grpo]})
    assert "training.batch_size" in problem({"stages": [grpo]})
    ok = validate({"training": {"batch_size": 3}, "data": {"eval_split": 0}, "stages": [grpo]})
    assert ok.stages[0].num_generations == 3
    assert "training.eval_batch_size" in problem({"training": {"batch_size": 3, "eval_batch_size": 2},
                                                  "stages": [grpo]})
    assert "stages.0.training.batch_size" in problem({"stages": [{"type": "kto", "training": {"batch_size": 1}}]})
    assert "'stage:sft' names no earlier `reward` stage" in problem(
        {"stages": [{"type": "sft"}, {"type": "grpo", "rewards": ["stage:sft"]}]})
    validate({"stages": [{"type": "reward"}, {"type": "grpo", "rewards": ["stage:reward"]}]})


def test_unknown_reward_function_fails_on_the_driver_before_the_first_stage(tmp_path):
    from rayft.stages import get_stage

    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    stage = validate({"data": {"path": str(path)},
                      "stages": [{"type": "grpo", "rewards": ["rayft.rewards:no_such"]}]}).stages[0]
    with pytest.raises(ConfigError, match="stages.0.rewards: 'rayft.rewards' has no function 'no_such'"):
        get_stage("grpo").preflight(stage, 0)
