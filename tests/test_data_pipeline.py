"""Data pipeline basics: formats, templates, answer-only labels, split, errors naming file:line."""

from __future__ import annotations

import os

import pytest

from conftest import DEMO_DATA, SHARED_DATA, write_jsonl
from rayft.schema.sections import DataConfig
from rayft.data.build import prepare, split_rows
from rayft.data.readers import Row, read_rows
from rayft.data.tokenize import IGNORE_INDEX
from rayft.core.errors import DataError


def _answer_text(tokenizer, item) -> str:
    return tokenizer.decode([t for t in item["labels"] if t != IGNORE_INDEX])


def test_loss_only_on_the_answer(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"What is {i}+{i}?", "answer": f"It is {2 * i}."}
                                               for i in range(10)])
    data = prepare(DataConfig(path=str(path), eval_split=0), tiny_tokenizer)
    item = data.train[3]
    assert _answer_text(tiny_tokenizer, item) == "It is 6." + tiny_tokenizer.eos_token
    first_label = next(i for i, t in enumerate(item["labels"]) if t != IGNORE_INDEX)
    prompt = tiny_tokenizer.decode(item["input_ids"][:first_label])
    assert prompt == "### Question:\nWhat is 3+3?\n\n### Answer:\n"
    assert item["input_ids"][-1] == tiny_tokenizer.eos_token_id


def test_train_on_prompt_keeps_every_label(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q?", "answer": "a."}] * 3)
    data = prepare(DataConfig(path=str(path), eval_split=0, train_on_prompt=True), tiny_tokenizer)
    assert data.train[0]["labels"] == data.train[0]["input_ids"]


def test_chat_template_segments_and_held_out_prompt(tiny_tokenizer):
    data = prepare(DataConfig(path=str(DEMO_DATA), template="chat", eval_split=10), tiny_tokenizer)
    assert data.stats["format"] == "instruction" and data.stats["eval"]["rows"] == 10
    row = data.eval[0]
    assert row["prompt"].endswith("<|im_start|>assistant\n")
    assert _answer_text(tiny_tokenizer, row).startswith(row["reference"])


def test_truncation_is_counted_and_answerless_rows_dropped(tmp_path, tiny_tokenizer):
    rows = [{"question": "word " * 200, "answer": "short"}, {"question": "q", "answer": "long " * 200},
            {"question": "q", "answer": "fine"}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    data = prepare(DataConfig(path=str(path), eval_split=0, max_length=64), tiny_tokenizer)
    stats = data.stats["train"]
    assert stats["dropped_no_answer_left"] == 1 and stats["truncated"] == 1 and stats["rows"] == 2
    left = prepare(DataConfig(path=str(path), eval_split=0, max_length=64, truncation_side="left"), tiny_tokenizer)
    assert left.stats["train"]["dropped_no_answer_left"] == 0 and left.stats["train"]["truncated"] == 2
    assert all(len(r["input_ids"]) <= 64 for r in left.train)


def test_split_is_seeded_and_disjoint():
    rows = [Row({"i": i}, f"f:{i}") for i in range(100)]
    train, held = split_rows(rows, 0.2, seed=1)
    again_train, again_held = split_rows(rows, 0.2, seed=1)
    assert [r.origin for r in held] == [r.origin for r in again_held] and len(held) == 20
    assert not {r.origin for r in train} & {r.origin for r in held}
    assert [r.origin for r in split_rows(rows, 0.2, seed=2)[1]] != [r.origin for r in held]
    assert len(split_rows(rows, 7, seed=1)[1]) == 7


@pytest.mark.parametrize("content,expected", [
    ('{"question": "a", "answer": "b"}\n{"question": "c", "answer": \n', r"bad.jsonl:2: not valid JSON"),
    ('{"question": "a", "answer": "b"}\n["not", "an", "object"]\n', r"bad.jsonl:2: expected a JSON object"),
    ('{"question": "a", "answer": "b"}\n{"question": "c"}\n', r"bad.jsonl:2: missing field 'answer'"),
    ('{"question": "a", "answer": 3}\n', r"bad.jsonl:1: field 'answer' must be text"),
    ('{"foo": "a"}\n', r"cannot tell the format from the columns \['foo'\]"),
])
def test_bad_rows_name_file_and_line(tmp_path, tiny_tokenizer, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=expected):
        prepare(DataConfig(path=str(path), eval_split=0), tiny_tokenizer)


def test_chat_messages_out_of_order(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "assistant", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"chat.jsonl:1: messages\[0\] has role 'assistant' out of order"):
        prepare(DataConfig(path=str(path), eval_split=0), tiny_tokenizer)


def test_column_mapping_and_csv(tmp_path, tiny_tokenizer):
    path = tmp_path / "d.csv"
    path.write_text("q,a\nhello?,world\nfoo?,bar\n")
    data = prepare(DataConfig(path=str(path), format="qa", columns={"question": "q", "answer": "a"},
                              eval_split=0), tiny_tokenizer)
    assert data.stats["train"]["rows"] == 2
    assert _answer_text(tiny_tokenizer, data.train[1]).startswith("bar")


def test_missing_file_and_input_untouched(tmp_path, tiny_tokenizer):
    with pytest.raises(DataError, match="no such file"):
        read_rows(str(tmp_path / "none.jsonl"))
    before = DEMO_DATA.read_bytes()
    prepare(DataConfig(path=str(DEMO_DATA), eval_split=5), tiny_tokenizer)
    assert DEMO_DATA.read_bytes() == before


def test_lamini_qa_set_keeps_its_own_template(tiny_tokenizer):
    path = SHARED_DATA / "lamini_docs.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/data ships beside the repo in CI only)")
    with pytest.raises(DataError, match=r"lamini_docs.jsonl:424: empty answer"):
        prepare(DataConfig(path=str(path), eval_split=0.1, max_length=256), tiny_tokenizer)
    data = prepare(DataConfig(path=str(path), eval_split=0.1, max_length=256, on_error="skip"), tiny_tokenizer)
    assert data.stats["skipped_bad_rows"] == {"count": 1, "by_reason": {"empty answer": 1}}
    assert data.stats["rows_read"] == 1400 and data.stats["format"] == "qa"
    prompt = data.eval[0]["prompt"]
    assert prompt.startswith("### Question:\n") and prompt.count("### Question:") == 1
    # The real set repeats a few questions+answers verbatim (up to case/punctuation): removed, counted.
    removed = data.stats["dedup"]["exact_removed"]
    assert removed == len(data.removed) > 0
    kept = data.stats["train"]["rows"] + data.stats["train"]["dropped_no_answer_left"] + data.stats["eval"]["rows"]
    assert kept == 1400 - removed - 1


def test_dedup_before_split_and_counts(tmp_path, tiny_tokenizer):
    rows = [{"question": f"What is item {i}?", "answer": f"Item {i}."} for i in range(30)]
    rows += [{"question": "what is ITEM 3?", "answer": "Item 3"}, {"question": "What is item 7 ?", "answer": "item 7."}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    data = prepare(DataConfig(path=str(path), eval_split=5), tiny_tokenizer)
    assert data.stats["rows_read"] == 32 and data.stats["dedup"] == {"exact_removed": 2, "near_removed": 0}
    assert {r.origin.rsplit(":", 1)[1] for r in data.removed} == {"31", "32"}
    assert {r.duplicate_of.rsplit(":", 1)[1] for r in data.removed} == {"4", "8"}
    assert data.stats["train"]["rows"] + data.stats["eval"]["rows"] == 30
    kept_all = prepare(DataConfig(path=str(path), eval_split=5, dedup={"exact": False}), tiny_tokenizer)
    assert kept_all.stats["train"]["rows"] + kept_all.stats["eval"]["rows"] == 32


def test_sources_mixed_by_weight_after_the_split(tmp_path, tiny_tokenizer):
    a = write_jsonl(tmp_path / "a.jsonl", [{"question": f"A{i}?", "answer": f"a{i}"} for i in range(20)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"instruction": f"Do B{i}", "output": f"b{i}"} for i in range(10)])
    cfg = DataConfig(sources=[{"path": str(a), "weight": 0.5}, {"path": str(b), "weight": 2}], eval_split=0)
    data = prepare(cfg, tiny_tokenizer)
    assert data.stats["format"] == "mixed" and data.stats["formats"] == ["instruction", "qa"]
    assert [s["used_for_training"] for s in data.stats["sources"]] == [10, 20]
    assert data.stats["train"]["rows"] == 30
    held = prepare(DataConfig(sources=[{"path": str(a)}, {"path": str(b), "weight": 3}], eval_split=6, seed=3),
                   tiny_tokenizer)
    # Repeats only ever come from the training split; the held-out rows are each read once.
    assert held.stats["eval"]["rows"] == 6
    assert held.stats["train"]["rows"] == sum(s["used_for_training"] for s in held.stats["sources"])
    again = prepare(DataConfig(sources=[{"path": str(a), "weight": 0.5}], eval_split=0), tiny_tokenizer)
    assert again.train["input_ids"] == prepare(DataConfig(sources=[{"path": str(a), "weight": 0.5}], eval_split=0),
                                               tiny_tokenizer).train["input_ids"], "weights are seeded"


def test_path_and_sources_together_is_a_config_error():
    from rayft.config.load import validate
    from rayft.core.errors import ConfigError

    with pytest.raises(ConfigError, match="give one of `path`, `sources` or `dataset`, not path and sources"):
        validate({"data": {"path": "a.jsonl", "sources": [{"path": "b.jsonl"}]}})


def test_folder_of_mixed_file_types(tmp_path, tiny_tokenizer):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "1.jsonl", [{"question": "q1", "answer": "a1"}])
    (folder / "2.json").write_text('[{"question": "q2", "answer": "a2"}]')
    (folder / "3.csv").write_text("question,answer\nq3,a3\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["q4"], "answer": ["a4"]}), folder / "4.parquet")
    (folder / "notes.txt").write_text("ignored: not a data file type")
    data = prepare(DataConfig(path=str(folder), eval_split=0), tiny_tokenizer)
    assert data.stats["rows_read"] == 4 and data.stats["train"]["rows"] == 4


def test_preference_rows_plain_and_conversational(tmp_path, tiny_tokenizer):
    rows = [
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
        {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Greet me"},
                    {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again"}],
         "chosen": [{"role": "assistant", "content": "Hello again!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
    ]
    path = write_jsonl(tmp_path / "pref.jsonl", rows)
    data = prepare(DataConfig(path=str(path), eval_split=0), tiny_tokenizer)
    assert data.stats["format"] == "preference" and data.stats["template"] == "chat"
    trained = [_answer_text(tiny_tokenizer, r) for r in data.train]
    assert trained[0].startswith("Hi!") and "Hello." in trained[1] and "Hello again!" in trained[1]
    assert not any("No." in t or "Go away." in t for t in trained), "SFT on preference data learns `chosen` only"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": [{"role": "user", "content": "x"}],
                                               "rejected": "r"}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'chosen' must be text or a one-message list"):
        prepare(DataConfig(path=str(bad), eval_split=0), tiny_tokenizer)


def test_hub_dataset_spec_fails_clearly_offline(tmp_path):
    """`rayft data inspect` on an `hf:` source with the hub unreachable (offline mode, set before
    anything imports `datasets`, as a user's environment would): one line naming the dataset and
    what to do, exit 2, no traceback, and no wait on network retries."""
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text("model: {name: 'builtin:tiny-random'}\ndata: {path: 'hf:someone/nothing', eval_split: 0}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "rayft", "data", "inspect", str(config)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cannot load dataset 'someone/nothing' split 'train'" in out.stderr and "use local files" in out.stderr
    assert "Traceback" not in out.stderr


BROKEN = ('{"question": "q1", "answer": "a1"}\n'
          '{"question": "q2", "answer": \n'
          '{"question": "q3"}\n'
          '{"question": "q4", "answer": "a4"}\n'
          '["a list"]\n'
          '{"question": "q6", "answer": "   "}\n'
          '{"question": 7, "answer": "a7"}\n').encode() + b'{"question": "caf\xe9", "answer": "x"}\n'


def test_on_error_fail_lists_every_bad_row(tmp_path, tiny_tokenizer):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(BROKEN)
    with pytest.raises(DataError) as err:
        prepare(DataConfig(path=str(path), eval_split=0), tiny_tokenizer)
    message = str(err.value)
    assert message.startswith("6 bad rows")
    for line, reason in [(2, "not valid JSON"), (3, "missing field 'answer'"), (5, "expected a JSON object"),
                         (6, "empty answer"), (7, "field 'question' must be text"), (8, "not UTF-8")]:
        assert f"broken.jsonl:{line}: {reason}" in message
    assert path.read_bytes() == BROKEN, "input files are never modified"


def test_on_error_skip_drops_and_counts_by_reason(tmp_path, tiny_tokenizer):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(BROKEN)
    data = prepare(DataConfig(path=str(path), eval_split=0, on_error="skip"), tiny_tokenizer)
    assert data.stats["train"]["rows"] == 2
    assert data.stats["skipped_bad_rows"] == {"count": 6, "by_reason": {
        "invalid JSON": 1, "missing field": 1, "not a JSON object": 1, "empty answer": 1, "wrong type": 1,
        "not UTF-8": 1}}
    assert [p.origin.rsplit(":", 1)[1] for p in data.problems] == ["2", "5", "8", "3", "6", "7"]
    first_bad = tmp_path / "first_bad.jsonl"  # a broken first row does not decide the format
    first_bad.write_text('{"question": "q"}\n{"question": "q2", "answer": "a2"}\n')
    data = prepare(DataConfig(path=str(first_bad), eval_split=0, on_error="skip"), tiny_tokenizer)
    assert data.stats["format"] == "qa" and data.stats["train"]["rows"] == 1
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match="no usable rows"):
        prepare(DataConfig(path=str(only_bad), format="qa", eval_split=0, on_error="skip"), tiny_tokenizer)
