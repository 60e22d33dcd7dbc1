"""Counts that add up: where every row read went, for every stage type, from a stage's data stats.

These identities hold (tests/test_data_accounting.py checks them on random data for each kind of
stage data):

    rows read = bad + filtered + duplicates + held-out rows + training-split rows
        (with data.eval_path the held-out rows come from that file:
         held-out file rows read = its bad + its filtered + held-out rows)
    held-out rows = held out, used + held out, dropped (by reason)
    training examples = training-split rows x source weights, cut at data.max_rows
                      = trained on + dropped (by reason)

A source weight repeats or samples rows, so training examples are counted apart from rows read.
"""

from __future__ import annotations

from typing import Any

# Per-example drops of each stage type's preparation, in words
DROPS = {"dropped_no_answer_left": "answer cut away by max_length", "skipped_no_prompt": "no prompt (text row)",
         "skipped_unknown_label": "label not among the training labels"}


def _dropped(side: dict[str, Any]) -> dict[str, int]:
    found = {DROPS[k]: int(side[k]) for k in DROPS if side.get(k)}
    if side.get("too_long") and side.get("too_long_action") == "dropped":
        found["too long for max_length"] = int(side["too_long"])
    return found


def account(stats: dict[str, Any]) -> dict[str, Any]:
    """{lines: {what: count}, adds_up: bool, problems: [which identity fails, with its figures]}."""
    split = stats.get("split") or {}
    train, held = stats.get("train") or {}, stats.get("eval") or {}
    held_dropped, train_dropped = _dropped(held), _dropped(train)
    trained = int(train.get("rows", train.get("prompts", 0)))
    lines = {"rows read": int(stats.get("rows_read", 0)), "bad rows skipped": int(split.get("bad", 0)),
             "dropped by data.filters": int(split.get("filtered", 0)),
             "duplicates removed": int(sum((stats.get("dedup") or {}).values())),
             "held-out rows": int(split.get("held_out_rows", 0)),
             "training-split rows": int(split.get("train_rows", 0)),
             "held out, used": int(held.get("rows", 0)),
             **{f"held out, dropped: {k}": v for k, v in held_dropped.items()},
             "training examples (x weights, max_rows)": int(split.get("train_examples", 0)),
             "trained on": trained, **{f"training, dropped: {k}": v for k, v in train_dropped.items()}}
    problems = []
    from_file = split.get("held_out_file")
    parts = ["bad rows skipped", "dropped by data.filters", "duplicates removed", "training-split rows"]
    parts += [] if from_file else ["held-out rows"]
    if lines["rows read"] != sum(lines[k] for k in parts):
        problems.append(f"rows read {lines['rows read']} != " + " + ".join(f"{k} {lines[k]}" for k in parts))
    if from_file and from_file["rows_read"] != from_file["bad"] + from_file["filtered"] + lines["held-out rows"]:
        problems.append(f"held-out file rows read {from_file['rows_read']} != bad {from_file['bad']} + filtered "
                        f"{from_file['filtered']} + held-out rows {lines['held-out rows']}")
    if lines["held-out rows"] != lines["held out, used"] + sum(held_dropped.values()):
        problems.append(f"held-out rows {lines['held-out rows']} != used {lines['held out, used']} + dropped "
                        f"{sum(held_dropped.values())}")
    if lines["training examples (x weights, max_rows)"] != trained + sum(train_dropped.values()):
        problems.append(f"training examples {lines['training examples (x weights, max_rows)']} != trained on "
                        f"{trained} + dropped {sum(train_dropped.values())}")
    return {"lines": lines, "adds_up": not problems, "problems": problems}


def one_line(lines: dict[str, int]) -> str:
    """The counts in one line, leaving out the zeros and what repeats another figure."""
    parts = [f"{lines['rows read']} rows read"]
    parts += [f"{lines[k]} {k}" for k in ("bad rows skipped", "dropped by data.filters", "duplicates removed") if lines[k]]
    held = [f"{lines['held out, used']} held out"]
    held += [f"{v} held-out {k.removeprefix('held out, dropped: ')}" for k, v in lines.items()
             if k.startswith("held out, dropped: ")]
    parts += held
    if lines["training examples (x weights, max_rows)"] != lines["training-split rows"]:
        parts.append(f"{lines['training-split rows']} training rows -> {lines['training examples (x weights, max_rows)']} "
                     f"examples (source weights, max_rows)")
    parts.append(f"{lines['trained on']} trained on")
    parts += [f"{v} dropped ({k.removeprefix('training, dropped: ')})" for k, v in lines.items()
              if k.startswith("training, dropped: ")]
    return ", ".join(parts)
