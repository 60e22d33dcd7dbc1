"""Tests for the synthetic order-extraction demo dataset (rayft/demo/dataset.py)."""

import json
import random
from pathlib import Path

import pytest

from rayft.demo import dataset as ds

ROWS = ds.make_rows(600, 0)


def test_deterministic_same_seed():
    assert ds.make_rows(50, 0) == ds.make_rows(50, 0)
    assert ds.make_rows(50, 7) == ds.make_rows(50, 7)
    assert ds.make_example(random.Random(3)) == ds.make_example(random.Random(3))


def test_different_seed_differs():
    assert ds.make_rows(50, 0) != ds.make_rows(50, 1)


def test_prefix_stable():
    # Asking for fewer rows yields a prefix of the longer list.
    assert ds.make_rows(100, 0) == ROWS[:100]


def test_alpaca_format():
    for row in ROWS:
        assert set(row) == {"instruction", "input", "output"}
        assert row["instruction"] == ds.INSTRUCTION
        assert row["input"] and "\n" not in row["input"]
        assert "\n" not in row["output"]


def test_instruction_names_the_keys():
    for key in ds.KEYS:
        assert f'"{key}"' in ds.INSTRUCTION


def test_output_is_json_with_fixed_keys_in_order():
    for row in ROWS:
        obj = json.loads(row["output"])
        assert tuple(obj) == ds.KEYS
        assert isinstance(obj["quantity"], int) and obj["quantity"] > 0
        assert all(isinstance(obj[k], str) for k in ds.KEYS if k != "quantity")
        # Canonical serialisation, so exact string match is well defined.
        assert row["output"] == json.dumps(obj, separators=ds.SEPARATORS)


def test_values_derive_from_input():
    for row in ROWS:
        obj = json.loads(row["output"])
        text = row["input"]
        low = text.lower()
        assert obj["name"] in text
        assert obj["city"] in text
        assert obj["color"] in low and obj["color"] == obj["color"].lower()
        assert obj["item"] in ds.ITEMS
        assert obj["item"] in low or ds.ITEMS[obj["item"]] in low
        assert obj["day"] in ds.DAYS and obj["day"][:3] in low
        q = obj["quantity"]
        words = low.replace(",", " ").replace(".", " ").split()
        assert str(q) in words or (q < len(ds.NUMBER_WORDS) and ds.NUMBER_WORDS[q] in words)


def test_plural_item_normalized_to_singular():
    plural = [r for r in ROWS if json.loads(r["output"])["quantity"] > 1]
    assert plural
    for row in plural:
        obj = json.loads(row["output"])
        assert ds.ITEMS[obj["item"]] in row["input"].lower()


def test_quantity_words_normalized():
    hits = 0
    for row in ROWS:
        obj = json.loads(row["output"])
        words = row["input"].lower().replace(",", " ").split()
        q = obj["quantity"]
        if q < len(ds.NUMBER_WORDS) and ds.NUMBER_WORDS[q] in words:
            hits += 1
            assert str(q) not in words  # written only as a word in the message
    assert hits >= 100  # a healthy share of quantities are spelled out


def test_day_variants_normalized():
    abbrev = [r for r in ROWS if json.loads(r["output"])["day"] not in r["input"].lower()]
    assert len(abbrev) >= 30  # e.g. "Fri" -> "friday"
    for row in abbrev:
        day = json.loads(row["output"])["day"]
        assert day[:3].capitalize() in row["input"]


def test_no_duplicate_inputs_and_variety():
    inputs = [r["input"] for r in ROWS]
    assert len(set(inputs)) == len(inputs)
    assert len(ds.TEMPLATES) >= 15
    outs = [json.loads(r["output"]) for r in ROWS]
    for key, minimum in [("name", 30), ("item", 30), ("color", 15), ("city", 30), ("day", 7)]:
        assert len({o[key] for o in outs}) >= minimum, key


def test_short_messages():
    for row in ROWS:
        assert len(row["input"].split()) <= 30
        assert len(row["output"]) <= 120


def test_shipped_jsonl_matches_generator():
    path = Path(ds.__file__).with_name("extract_orders.jsonl")
    assert path == ds.SHIPPED_PATH
    shipped = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert shipped == ROWS


def test_write_jsonl_roundtrip(tmp_path):
    out = ds.write_jsonl(tmp_path / "sub" / "x.jsonl", 20, 5)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == ds.make_rows(20, 5)


def test_impossible_request_raises(monkeypatch):
    monkeypatch.setattr(ds, "make_example", lambda rng: {"instruction": "", "input": "same", "output": ""})
    with pytest.raises(RuntimeError):
        ds.make_rows(2, 0)
