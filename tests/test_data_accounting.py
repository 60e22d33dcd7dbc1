"""Counts that add up: on random data with bad rows, duplicates, filtered rows, rows too long to train
and text rows without a prompt, every row read lands in exactly one line, for each kind of stage data
(SFT tokens, preference pairs kept or dropped when too long, RL prompts), with a held-out split or a
held-out file, source weights and max_rows (rayft.data.accounting)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayft.data.accounting import account
from rayft.data.build import prepare
from rayft.data.preference_data import prepare_preference, prepare_prompts
from rayft.schema.sections import DataConfig

WORDS = ["alpha", "beta", "gamma", "delta", "spam", "Lamini"]


@st.composite
def rows(draw, preference: bool):
    out = []
    for i in range(draw(st.integers(6, 30))):
        kind = draw(st.sampled_from(["ok", "ok", "ok", "bad", "duplicate", "filtered", "long"]))
        text = " ".join(draw(st.lists(st.sampled_from(WORDS[:4]), min_size=1, max_size=6)))
        answer = f"{text} {i}" if kind != "long" else " ".join(["word"] * draw(st.integers(60, 120)))
        if kind == "filtered":
            answer = f"{answer} spam spam"
        row = ({"prompt": f"Q {i}: {text}?", "chosen": answer, "rejected": f"no {i}"} if preference
               else {"question": f"Q {i}: {text}?", "answer": answer})
        if kind == "bad":
            row.pop("chosen" if preference else "answer")
        if kind == "duplicate" and out:
            row = dict(draw(st.sampled_from(out)))
        out.append(row)
    return out


def _write(path, items):
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return str(path)


def _config(path, fmt, draw_split, extra):
    return DataConfig.model_validate({"path": path, "format": fmt, "on_error": "skip", "max_length": 48,
                                      "eval_split": draw_split, "filters": [{"name": "spam", "contains": ["spam spam"]}],
                                      **extra})


def _check(stats):
    found = account(stats)
    assert found["adds_up"], (found["problems"], stats)
    return found


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=rows(preference=False), split=st.sampled_from([0, 0.2, 3]), max_rows=st.sampled_from([None, 4]))
def test_sft_rows_add_up(tmp_path_factory, tiny_tokenizer, data, split, max_rows):
    path = _write(tmp_path_factory.mktemp("sft") / "qa.jsonl", data)
    try:
        prepared = prepare(_config(path, "qa", split, {"max_rows": max_rows} if max_rows else {}), tiny_tokenizer)
    except Exception as exc:  # too few usable rows for the split: a clear error, not a count
        assert "no usable" in str(exc) or "leaves no training rows" in str(exc)
        return
    lines = _check(prepared.stats)["lines"]
    assert lines["rows read"] == len(data)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=rows(preference=True), split=st.sampled_from([0, 0.25]), drop=st.booleans())
def test_preference_pairs_add_up_kept_or_dropped_when_too_long(tmp_path_factory, tiny_tokenizer, data, split, drop):
    path = _write(tmp_path_factory.mktemp("pref") / "pairs.jsonl", data)
    try:
        prepared = prepare_preference(_config(path, "preference", split, {}), tiny_tokenizer, "reward",
                                      drop_too_long=drop)
    except Exception as exc:
        assert "no usable" in str(exc) or "leaves no training rows" in str(exc)
        return
    found = _check(prepared.stats)
    assert found["lines"]["rows read"] == len(data)
    if drop and prepared.stats["train"]["too_long"]:
        assert found["lines"]["training, dropped: too long for max_length"] == prepared.stats["train"]["too_long"]


def test_prompts_weights_and_a_held_out_file_add_up(tmp_path, tiny_tokenizer):
    """RL prompts from a chat source and a text source (no prompt) weighted 1.5, with a separate
    held-out file that has a bad row: both identities hold."""
    chat = _write(tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)])
    text = _write(tmp_path / "text.jsonl", [{"text": f"raw text {i}"} for i in range(4)])
    held = _write(tmp_path / "held.jsonl", [{"question": "hq", "answer": "ha"}, {"question": "no answer"},
                                            {"question": "hq2", "answer": "spam spam"}])
    cfg = DataConfig.model_validate({"sources": [{"path": chat, "format": "qa", "weight": 1.5},
                                                 {"path": text, "format": "text"}],
                                     "eval_path": held, "format": "qa", "on_error": "skip",
                                     "filters": [{"contains": ["spam spam"]}]})
    prepared = prepare_prompts(cfg, tiny_tokenizer, "grpo")
    found = _check(prepared.stats)["lines"]
    assert found["rows read"] == 14 and found["training examples (x weights, max_rows)"] == 19
    assert found["training, dropped: no prompt (text row)"] == 4 and found["held-out rows"] == 1
    assert prepared.stats["split"]["held_out_file"] == {"rows_read": 3, "bad": 1, "filtered": 1}
