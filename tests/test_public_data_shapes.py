"""Data as public sets ship it, used as it is: implicit-prompt preference pairs (Anthropic HH's
plain "\\n\\nHuman: / \\n\\nAssistant:" transcripts, other speaker transcripts, UltraFeedback-style
message lists) giving the same prompt text as an explicit-prompt row; ShareGPT conversations as
the chat format (every assistant turn trained, or the last only); bad rows named by file:line with
their reason, and one dataset-level message when every row fails the same way."""

from __future__ import annotations

import json

import pytest

from conftest import write_jsonl
from rayft.data.preference_data import prepare_preference
from rayft.core.errors import DataError
from rayft.schema.sections import DataConfig

QUESTIONS = [f"How do I get back at neighbour {i}?" for i in range(8)]


def _hh(question: str, answer: str) -> str:
    """An Anthropic HH-RLHF transcript: an earlier exchange, then the question and an answer."""
    return (f"\n\nHuman: My neighbour is loud.\n\nAssistant: That sounds stressful.\n\nHuman: {question}"
            f"\n\nAssistant: {answer}")


HH = [{"chosen": _hh(q, "Talk to them calmly first."), "rejected": _hh(q, "Slash their tyres.")} for q in QUESTIONS]
# The same pairs with the prompt given explicitly (as a conversational prompt).
EXPLICIT = [{"prompt": [{"role": "user", "content": "My neighbour is loud."},
                        {"role": "assistant", "content": "That sounds stressful."},
                        {"role": "user", "content": q}],
             "chosen": "Talk to them calmly first.", "rejected": "Slash their tyres."} for q in QUESTIONS]


def _prepared(tmp_path, rows, tokenizer, name="pairs.jsonl", **data):
    path = write_jsonl(tmp_path / name, rows)
    return prepare_preference(DataConfig(path=str(path), eval_split=0, max_length=256, **data), tokenizer, "dpo")


def test_hh_transcripts_give_the_same_pairs_as_explicit_prompts(tmp_path, tiny_tokenizer):
    implicit = _prepared(tmp_path, HH, tiny_tokenizer, "hh.jsonl")
    explicit = _prepared(tmp_path, EXPLICIT, tiny_tokenizer, "explicit.jsonl")
    assert implicit.stats["format"] == "preference_implicit" and implicit.stats["template"] == "chat"
    assert implicit.train.to_list() == explicit.train.to_list()
    row = implicit.train[0]
    assert "Human:" not in row["prompt"] and row["prompt"].count("<|im_start|>user") == 2
    assert (row["chosen"], row["rejected"]) == ("Talk to them calmly first.", "Slash their tyres.")


def test_every_preference_stage_reads_implicit_pairs(tmp_path, tiny_tokenizer):
    """reward / dpo / orpo / cpo / kto all take implicit-prompt pairs."""
    from rayft.stages import get_stage
    from rayft.config.load import validate

    path = write_jsonl(tmp_path / "hh.jsonl", HH)
    stages = [{"type": t} for t in ("reward", "dpo", "orpo", "cpo", "kto")]
    cfg = validate({"model": {"name": "builtin:tiny-random"}, "data": {"path": str(path), "eval_split": 2},
                    "stages": stages})
    for stage in cfg.stages:
        data = get_stage(stage.type).prepare_data(stage, tiny_tokenizer)
        pairs = 6 * (2 if stage.type == "kto" else 1)  # KTO trains on each answer alone
        assert len(data.train) == pairs and data.stats["format"] == "preference_implicit", stage.type


def test_conversational_pairs_with_and_without_a_prompt_column(tmp_path, tiny_tokenizer):
    """UltraFeedback-binarized rows: `chosen` / `rejected` are whole dialogues (user turn repeated),
    often beside a plain-text `prompt` column; either way the dialogues give the prompt."""
    def dialogue(q, a):
        return [{"role": "system", "content": "Be kind."}, {"role": "user", "content": q},
                {"role": "assistant", "content": a}]

    rows = [{"chosen": dialogue(q, "Talk first."), "rejected": dialogue(q, "Revenge.")} for q in QUESTIONS]
    with_prompt = [{"prompt": q, **r} for q, r in zip(QUESTIONS, rows)]
    explicit = [{"system": "Be kind.", "prompt": q, "chosen": "Talk first.", "rejected": "Revenge."} for q in QUESTIONS]
    a = _prepared(tmp_path, rows, tiny_tokenizer, "a.jsonl")
    b = _prepared(tmp_path, with_prompt, tiny_tokenizer, "b.jsonl")
    c = _prepared(tmp_path, explicit, tiny_tokenizer, "c.jsonl")
    assert a.stats["format"] == "preference_implicit" and b.stats["format"] == "preference"
    assert a.train.to_list() == b.train.to_list() == c.train.to_list()
    assert "Be kind." in a.train[0]["prompt"]


def test_plain_transcripts_with_other_speakers_and_without_speakers(tmp_path, tiny_tokenizer):
    rows = [{"chosen": f"User: {q}\nAssistant: Talk first.", "rejected": f"User: {q}\nAssistant: Revenge."}
            for q in QUESTIONS]
    data = _prepared(tmp_path, rows, tiny_tokenizer, "user.jsonl", template="qa")
    assert data.train[0]["prompt"] == f"### Question:\n{QUESTIONS[0]}\n\n### Answer:\n"
    assert data.train[0]["chosen"] == "Talk first."
    rows = [{"chosen": f"{q}\nTalk first.", "rejected": f"{q}\nRevenge."} for q in QUESTIONS]  # no speakers
    data = _prepared(tmp_path, rows, tiny_tokenizer, "plain.jsonl", template="qa")
    assert data.train[0]["prompt"] == f"### Question:\n{QUESTIONS[0]}\n\n### Answer:\n"
    assert (data.train[0]["chosen"], data.train[0]["rejected"]) == ("Talk first.", "Revenge.")


def test_bad_implicit_pairs_name_file_line_and_reason(tmp_path, tiny_tokenizer):
    bad = [
        {"chosen": "Paris", "rejected": "London"},  # no shared prompt
        HH[0] | {"rejected": HH[0]["chosen"]},  # the same answer twice
        {"chosen": _hh("a", "b"), "rejected": _hh("a", "b").replace("That sounds stressful.", "Move out.")},
        {"chosen": _hh("a", ""), "rejected": _hh("a", "Revenge.")},  # an empty answer
        {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "rejected": "plain text"},  # mixed shapes
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", [*HH, *bad])
    before = path.read_bytes()
    with pytest.raises(DataError) as err:
        prepare_preference(DataConfig(path=str(path), eval_split=0, format="preference_implicit"), tiny_tokenizer)
    message = str(err.value)
    assert message.startswith("5 bad rows")
    for line, reason in [(9, "share no prompt"), (10, "are the same answer"), (11, "differ before their last "
                         "assistant turn"), (12, "empty chosen answer"), (13, "must both be text or both be lists")]:
        assert f"bad.jsonl:{line}: 'chosen'" in message or f"bad.jsonl:{line}: " in message
        assert reason in message.split(f"bad.jsonl:{line}: ", 1)[1].split("\n", 1)[0], (line, reason)
    skipped = prepare_preference(DataConfig(path=str(path), eval_split=0, on_error="skip"), tiny_tokenizer)
    assert len(skipped.train) == 8 and skipped.stats["skipped_bad_rows"]["by_reason"] == {
        "no shared prompt": 1, "identical pair": 1, "diverging transcripts": 1, "empty answer": 1, "wrong type": 1}
    assert path.read_bytes() == before, "input files are never modified"


def test_a_whole_file_failing_one_way_is_said_once_with_the_fix(tmp_path, tiny_tokenizer):
    """HH pairs read as explicit-prompt preference rows: one line for all 300 rows, the format
    that fits named, three file:line examples; not 300 copies of one message."""
    rows = [{"chosen": _hh(f"q{i}", "yes"), "rejected": _hh(f"q{i}", "no")} for i in range(300)]
    with pytest.raises(DataError) as err:
        _prepared(tmp_path, rows, tiny_tokenizer, "hh.jsonl", format="preference")
    message = str(err.value)
    assert message.startswith("300 bad rows") and message.count("missing field 'prompt'") == 1
    assert "300 rows: missing field 'prompt'" in message
    assert "set data.format: preference_implicit (or auto)" in message
    assert "hh.jsonl:1, " in message and "and 297 more" in message and len(message.splitlines()) == 3


def test_the_schema_lists_every_registered_format():
    from typing import get_args

    from rayft.data.formats import FORMATS
    from rayft.schema.sections import RowFormatName

    assert set(get_args(RowFormatName)) == {"auto", *FORMATS}


def test_data_inspect_shows_the_split_prompt(tmp_path, capsys):
    from rayft.cli import main

    path = write_jsonl(tmp_path / "hh.jsonl", HH)
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"model": {"name": "builtin:tiny-random"}, "stages": [{"type": "reward"}],
                                  "data": {"path": str(path), "eval_split": 0}}))
    assert main(["data", "inspect", str(config)]) == 0
    out = capsys.readouterr().out
    assert "preference_implicit" in out and "chosen:   Talk to them calmly first." in out
    assert f"<|im_start|>user\n{QUESTIONS[0]}<|im_end|>" in out and "Human:" not in out


# ShareGPT as it ships (e.g. from LLaMA-Factory's and Axolotl's example sets): `from` / `value`.
SHAREGPT = [{"id": str(i), "conversations": [
    {"from": "system", "value": "You are terse."},
    {"from": "human", "value": f"Add {i} and 1."},
    {"from": "gpt", "value": f"{i + 1}"},
    {"from": "human", "value": "And times two?"},
    {"from": "gpt", "value": f"{2 * (i + 1)}"}]} for i in range(6)]


def _as_messages(row: dict) -> dict:
    roles = {"system": "system", "human": "user", "gpt": "assistant"}
    return {"messages": [{"role": roles[m["from"]], "content": m["value"]} for m in row["conversations"]]}


def _answer_tokens(data, tokenizer, i: int = 0) -> str:
    from rayft.data.tokenize import IGNORE_INDEX

    return tokenizer.decode([t for t in data.train[i]["labels"] if t != IGNORE_INDEX])


def test_sharegpt_is_the_chat_format_with_every_assistant_turn_trained(tmp_path, tiny_tokenizer):
    from rayft.data.build import prepare

    def prepared(rows, name, **extra):
        path = write_jsonl(tmp_path / name, rows)
        return prepare(DataConfig(path=str(path), eval_split=0, max_length=128, dedup={"exact": False}, **extra),
                       tiny_tokenizer)

    share = prepared(SHAREGPT, "share.jsonl")
    chat = prepared([_as_messages(r) for r in SHAREGPT], "chat.jsonl")
    assert share.stats["format"] == "sharegpt" and share.stats["template"] == "chat"
    assert share.train.to_list() == chat.train.to_list()
    # What trains is exactly the tokenizer's own chat template of the same conversation.
    messages = _as_messages(SHAREGPT[0])["messages"]
    assert tiny_tokenizer.decode(share.train[0]["input_ids"]) == tiny_tokenizer.apply_chat_template(messages,
                                                                                                   tokenize=False)
    assert _answer_tokens(share, tiny_tokenizer).replace("<|im_end|>", "|") == "1|\n2|\n"  # both replies
    last = prepared(SHAREGPT, "share.jsonl", train_on="last_turn")
    assert last.train[0]["input_ids"] == share.train[0]["input_ids"]
    assert _answer_tokens(last, tiny_tokenizer).replace("<|im_end|>", "|") == "2|\n"  # the last reply only
    # role / content keys under another column name, mapped with data.columns.
    renamed = [{"dialog": [{"role": m["from"], "content": m["value"]} for m in r["conversations"]]} for r in SHAREGPT]
    mapped = prepared(renamed, "renamed.jsonl", columns={"conversations": "dialog"})
    assert mapped.train.to_list() == share.train.to_list()


def test_sharegpt_tool_turns_and_bad_rows(tmp_path, tiny_tokenizer):
    from rayft.data.formats import normalize

    row = {"conversations": [{"from": "human", "value": "Weather?"}, {"from": "function_call", "value": "get()"},
                             {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}]}
    ex = normalize(row, "sharegpt", "f.jsonl:1")
    assert ex["turns"] == [("Weather?", "get()"), ("[observation result]\nsunny", "Sunny.")]
    for conversation, reason in [([{"from": "alien", "value": "hi"}], "unknown speaker 'alien'"),
                                 ([{"from": "human", "value": 3}], "must be {from, value}"),
                                 ([{"from": "human", "value": "hi"}], "must end with an assistant reply"),
                                 ("not a list", "non-empty list")]:
        with pytest.raises(DataError, match="f.jsonl:2: ") as err:
            normalize({"conversations": conversation}, "sharegpt", "f.jsonl:2")
        assert reason in str(err.value)
