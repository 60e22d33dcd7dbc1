"""Data of a `classify` stage: one text (or a text pair) and a label per row, read as it ships
(GLUE-style files: `sentence1` / `sentence2` / `label`, names or integers). Bad rows name their
file:line; filters, exact dedup and the seeded split are the other stages'; the label map is
inferred from the training rows (names sorted; integers as they are) unless the stage names it.
Tokenized without padding: the collator pads each batch to its longest row (dynamic padding)."""

from __future__ import annotations

from typing import Any

from rayft.core.errors import DataError
from rayft.data.bad_rows import RowProblem
from rayft.data.build import PreparedData, gather
from rayft.data.readers import Row, read_rows


def label_names(values: list[Any], given: list[str] | None) -> list[str]:
    """The label names in id order: given, or integers 0..max, or the sorted distinct names."""
    if given:
        return list(given)
    if all(isinstance(v, int) for v in values):
        return [str(i) for i in range(max(values) + 1)] if values else []
    return sorted({str(v) for v in values})


def prepare_classification(stage: Any, tokenizer: Any) -> PreparedData:
    from datasets import Dataset

    cfg = stage.data
    problems: list[RowProblem] = []
    rows = _checked(read_rows([s.path for s in cfg.source_list()], problems), stage, problems)
    collected = gather(cfg, rows, problems, lambda: _checked(read_rows(cfg.eval_path, problems), stage, problems),
                       stage=stage.name)
    names = label_names([r["label"] for r in collected.train], stage.labels)
    index = {name: i for i, name in enumerate(names)}
    train, train_stats = _tokenized(collected.train, index, tokenizer, cfg.max_length)
    held, eval_stats = _tokenized(collected.eval, index, tokenizer, cfg.max_length)
    if not train:
        raise DataError(f"data.path: no training row of the {stage.name} stage has a known label ({train_stats})")
    if len(names) < 2:
        raise DataError(f"{stage.name}: the training rows have {len(names)} label(s) ({names}); a classifier needs "
                        "at least two (set the stage's `labels` to name them all)")
    stats = {**collected.stats, "formats": ["classification"], "format": "classification", "template": "none",
             "labels": names, "label_counts": {n: sum(1 for r in train if r["labels"] == i) for n, i in index.items()},
             "train": train_stats, "eval": eval_stats}
    return PreparedData(Dataset.from_list(train), Dataset.from_list(held) if held else None, stats,
                        collected.removed, collected.problems, collected.filtered)


def _checked(rows: list[Row], stage: Any, problems: list[RowProblem]) -> list[Row]:
    """Rows with a text (and pair) and a label, as {"text", "pair", "label", "turns": []}; the others
    become problems naming their file:line."""
    out = []
    for row in rows:
        data = row.data
        text, pair, label = data.get(stage.text_column), data.get(stage.pair_column) if stage.pair_column else None, \
            data.get(stage.label_column)
        missing = [c for c, v in ((stage.text_column, text), (stage.label_column, label)) if v is None]
        if stage.pair_column and pair is None:
            missing.append(stage.pair_column)
        if missing:
            problems.append(RowProblem(row.origin, "missing field", f"{row.origin}: missing field "
                                       f"'{missing[0]}' (row has: {', '.join(sorted(data)) or 'nothing'})"))
            continue
        if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
            problems.append(RowProblem(row.origin, "wrong type", f"{row.origin}: the text fields must be text"))
            continue
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            problems.append(RowProblem(row.origin, "wrong type", f"{row.origin}: field '{stage.label_column}' must "
                                       f"be a label name or an integer, got {type(label).__name__}"))
            continue
        joined = text if pair is None else f"{text}\n{pair}"  # what filters and dedup read
        out.append(Row({"text": joined, "first": text, "pair": pair, "label": label, "turns": []}, row.origin))
    return out


def _tokenized(rows: list[dict[str, Any]], index: dict[str, int], tokenizer: Any, max_length: int
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out, unknown, truncated = [], 0, 0
    for row in rows:
        label = index.get(str(row["label"]))
        if label is None:  # a held-out label the training rows never had
            unknown += 1
            continue
        ids = tokenizer(row["first"], row["pair"], truncation=False)["input_ids"]
        if len(ids) > max_length:
            truncated += 1
        encoded = tokenizer(row["first"], row["pair"], truncation=True, max_length=max_length)
        out.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": label})
    return out, {"rows": len(out), "truncated": truncated, "skipped_unknown_label": unknown}
