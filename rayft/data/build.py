"""The data pipeline of one stage: read -> normalise -> split -> template -> tokenise.

Runs once on the driver; the workers receive the tokenised datasets. Every row that does not
make it into training is counted in `stats` (and reported), never dropped silently.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from rayft.config import DataConfig
from rayft.data.dedup import dedup_rows
from rayft.data.formats import detect_format, normalise, rename_columns
from rayft.data.readers import Row, read_rows
from rayft.data.templates import prompt_for_generation, render, resolve_template
from rayft.data.tokenize import tokenise
from rayft.errors import DataError


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset with input_ids, labels
    eval: Any | None  # same columns plus prompt / reference text for generation
    stats: dict[str, Any] = field(default_factory=dict)
    removed: list[Any] = field(default_factory=list)  # rayft.data.dedup.Removed, one per dropped duplicate


def split_rows(rows: list[Row], eval_split: float, seed: int) -> tuple[list[Row], list[Row]]:
    """A seeded, reproducible held-out split: a share (< 1) or a count (>= 1) of the rows."""
    if eval_split <= 0:
        return rows, []
    count = int(eval_split) if eval_split >= 1 else max(1, round(len(rows) * eval_split))
    if count >= len(rows):
        raise DataError(f"data.eval_split: {eval_split} leaves no training rows (only {len(rows)} rows)")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def prepare(cfg: DataConfig, tokenizer: Any) -> PreparedData:
    if cfg.path is None:
        raise DataError("data.path: no training data given (set data.path to a jsonl/json/csv/parquet file)")
    rows = read_rows(cfg.path)
    fmt = cfg.format
    if fmt == "auto":
        fmt = detect_format(set(rename_columns(rows[0], cfg.columns)))
    # Dedup before the split, so no copy of a held-out row can sit in the training split.
    deduped = dedup_rows(rows, lambda row: _row_text(row, cfg, fmt), exact=cfg.dedup.exact, near=cfg.dedup.near,
                         threshold=cfg.dedup.threshold, num_perm=cfg.dedup.num_perm, seed=cfg.seed)
    rows = deduped.kept
    if cfg.eval_path:
        train_rows, eval_rows = rows, read_rows(cfg.eval_path)
    else:
        train_rows, eval_rows = split_rows(rows, cfg.eval_split, cfg.seed)
    if cfg.max_rows:
        train_rows = train_rows[: cfg.max_rows]
    template = resolve_template(cfg.template, fmt, tokenizer)
    train, train_stats = _tokenise_rows(train_rows, cfg, fmt, template, tokenizer, with_text=False)
    held, eval_stats = _tokenise_rows(eval_rows, cfg, fmt, template, tokenizer, with_text=True)
    if not train:
        raise DataError(f"data.path: no usable training rows ({train_stats})")
    if cfg.packing:
        from rayft.data.packing import pack_examples

        train = pack_examples(train, cfg.max_length)
        train_stats["packed_rows"] = len(train)
    stats = {"rows_read": len(rows) + len(deduped.removed), "dedup": deduped.stats(), "format": fmt, "template": template if len(template) < 20 else "custom",
             "train": train_stats, "eval": eval_stats}
    from datasets import Dataset

    return PreparedData(Dataset.from_list(train), Dataset.from_list(held) if held else None, stats, deduped.removed)


def _row_text(row: Row, cfg: DataConfig, fmt: str) -> str:
    """The text that identifies a row for dedup: every turn (prompt and answer), or the raw text."""
    example = normalise(rename_columns(row, cfg.columns), fmt, row.origin)
    if not example["turns"]:
        return example["text"]
    return "\n".join(f"{user}\n{answer}" for user, answer in example["turns"])


def _tokenise_rows(rows: list[Row], cfg: DataConfig, fmt: str, template: str, tokenizer: Any,
                   with_text: bool) -> tuple[list[dict], dict[str, Any]]:
    out: list[dict] = []
    truncated = dropped = tokens = 0
    for row in rows:
        example = normalise(rename_columns(row, cfg.columns), fmt, row.origin)
        example["_origin"] = row.origin
        segments = render(example, template, tokenizer)
        tok = tokenise(segments, tokenizer, max_length=cfg.max_length, truncation_side=cfg.truncation_side,
                       train_on_prompt=cfg.train_on_prompt, add_eos=cfg.add_eos)
        if tok is None:
            dropped += 1
            continue
        truncated += tok.truncated
        tokens += len(tok.input_ids)
        item = {"input_ids": tok.input_ids, "labels": tok.labels}
        if with_text and example["turns"]:
            item["prompt"] = prompt_for_generation(segments)
            item["reference"] = example["turns"][-1][1]
        out.append(item)
    stats = {"rows": len(out), "tokens": tokens, "truncated": truncated, "dropped_no_answer_left": dropped}
    return out, stats
