"""The data pipeline of one stage: read -> normalize -> split -> template -> tokenize.

Runs once on the driver; the workers receive the tokenized datasets. Every row that does not
make it into training is counted in `stats` (and reported), never dropped silently.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from rayft.schema.sections import DataConfig
from rayft.data.dedup import dedup_as_configured
from rayft.data.bad_rows import RowProblem, count_by_reason, raise_if_any
from rayft.data.filters import Filtered, apply_filters, count_by_filter
from rayft.data.formats import detect_format, normalize, rename_columns
from rayft.data.readers import Row, read_rows
from rayft.data.sources import apply_weights, load_sources
from rayft.data.templates import last_turn_only, prompt_for_generation, render, resolve_template
from rayft.data.tokenize import tokenize
from rayft.core.errors import DataError


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset with input_ids, labels
    eval: Any | None  # same columns plus prompt / reference text for generation
    stats: dict[str, Any] = field(default_factory=dict)
    removed: list[Any] = field(default_factory=list)  # rayft.data.dedup.Removed, one per dropped duplicate
    problems: list[Any] = field(default_factory=list)  # rayft.data.bad_rows.RowProblem, bad rows skipped
    filtered: list[Any] = field(default_factory=list)  # rayft.data.filters.Filtered, rows data.filters dropped


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


@dataclass
class Collected:
    """Normalized examples (see rayft.data.formats) after dedup, split and source weights."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    stats: dict[str, Any]
    removed: list[Any]
    problems: list[RowProblem] = field(default_factory=list)  # bad rows skipped (data.on_error: skip)
    filtered: list[Filtered] = field(default_factory=list)  # rows dropped by data.filters


def collect(cfg: DataConfig) -> Collected:
    """Read, normalize, filter, dedup, split and weight a stage's rows. `stats["split"]` says where
    every row read went (rayft.data.accounting adds the lines up)."""
    problems: list[RowProblem] = []
    read, described = load_sources(cfg, problems)
    rows = _normalized(read, problems)  # each row's data becomes its normalized example
    return gather(cfg, rows, problems, lambda: _normalized(_eval_file_rows(cfg, problems), problems), described)


def gather(cfg: DataConfig, rows: list[Row], problems: list[RowProblem], read_held: Callable[[], list[Row]],
           described: list[dict[str, Any]] | None = None, stage: str | None = None) -> Collected:
    """What every stage's data goes through after its rows are read and checked (`problems` holds the
    bad ones): the held-out file (`read_held`, with data.eval_path), data.on_error, filters, dedup,
    the split, source weights (with `described`, the sources' descriptions), max_rows, and the
    counts in `stats["split"]`."""
    bad_main = len(problems)
    held_file = read_held() if cfg.eval_path else []
    raise_if_any(problems, cfg.on_error)
    rows_read = len(rows) + bad_main
    rows, filtered = apply_filters(rows, cfg.filters)
    held_read = len(held_file) + len(problems) - bad_main
    held_file, filtered_held = apply_filters(held_file, cfg.filters)
    if not rows:
        raise DataError(f"data.path: no usable rows{f' for the {stage} stage' if stage else ''} ({bad_main} bad "
                        f"rows skipped, {len(filtered)} rows dropped by data.filters)")
    # Dedup before the split, so no copy of a held-out row can sit in the training split.
    deduped = dedup_as_configured(rows, lambda row: _example_text(row.data), cfg)
    if cfg.eval_path:
        train_rows, eval_rows = deduped.kept, held_file
    else:
        train_rows, eval_rows = split_rows(deduped.kept, cfg.eval_split, cfg.seed)
    split: dict[str, Any] = {"bad": bad_main, "filtered": len(filtered), "train_rows": len(train_rows),
                             "held_out_rows": len(eval_rows)}
    if cfg.eval_path:  # read apart from data.path: its own identity
        split["held_out_file"] = {"rows_read": held_read, "bad": len(problems) - bad_main,
                                  "filtered": len(filtered_held)}
    if described is not None:
        train_rows, used = apply_weights(train_rows, cfg)
        for source, count in zip(described, used):
            source["used_for_training"] = count
    if cfg.max_rows:
        split["cut_by_max_rows"] = max(0, len(train_rows) - cfg.max_rows)
        train_rows = train_rows[: cfg.max_rows]
    split["train_examples"] = len(train_rows)
    stats = {"rows_read": rows_read, "sources": described, "dedup": deduped.stats(),
             "formats": sorted({r.format for r in rows}), "split": split}
    if problems:
        stats["skipped_bad_rows"] = {"count": len(problems), "by_reason": count_by_reason(problems)}
    if cfg.filters:
        stats["filtered"] = {"count": len(filtered) + len(filtered_held),
                             "by_filter": count_by_filter(filtered + filtered_held)}
    return Collected([r.data for r in train_rows], [r.data for r in eval_rows], stats, deduped.removed, problems,
                     filtered + filtered_held)


def prepare(cfg: DataConfig, tokenizer: Any) -> PreparedData:
    """Tokenized SFT data: prompt + answer per example, loss on the answer (preference rows: on `chosen`)."""
    collected = collect(cfg)
    templates: dict[str, str] = {}
    for ex in collected.train + collected.eval:
        if ex["_format"] not in templates:
            templates[ex["_format"]] = resolve_template(cfg.template, ex["_format"], tokenizer)
    train, train_stats = _tokenize(collected.train, cfg, templates, tokenizer, with_text=False)
    held, eval_stats = _tokenize(collected.eval, cfg, templates, tokenizer, with_text=True)
    if not train:
        raise DataError(f"data.path: no usable training rows ({train_stats})")
    if cfg.packing:
        from rayft.data.packing import pack_examples

        train = pack_examples(train, cfg.max_length)
        train_stats["packed_rows"] = len(train)
    return prepared(train, held, collected, templates, train_stats, eval_stats)


def prepared(train: list[dict], held: list[dict], collected: Collected, templates: dict[str, str],
             train_stats: dict[str, Any], eval_stats: dict[str, Any]) -> PreparedData:
    """Datasets from prepared rows, with the stage's stats (shared by every stage's data prep)."""
    from datasets import Dataset

    names = sorted({t if len(t) < 20 else "custom" for t in templates.values()})
    formats = collected.stats["formats"]
    stats = {**collected.stats, "template": names[0] if len(names) == 1 else names,
             "format": formats[0] if len(formats) == 1 else "mixed", "train": train_stats, "eval": eval_stats}
    return PreparedData(Dataset.from_list(train), Dataset.from_list(held) if held else None, stats,
                        collected.removed, collected.problems, collected.filtered)


def _eval_file_rows(cfg: DataConfig, problems: list[RowProblem]) -> list[Row]:
    rows = read_rows(cfg.eval_path, problems)
    if not rows:
        raise DataError(f"data.eval_path: {cfg.eval_path} has no usable rows")
    fmt = cfg.format if cfg.format != "auto" else detect_format(rows, cfg.columns)
    for row in rows:
        row.format, row.columns = fmt, cfg.columns
    return rows


def _normalized(rows: list[Row], problems: list[RowProblem]) -> list[Row]:
    """Rows whose `data` is the normalized example; a bad row becomes a problem instead."""
    out = []
    for row in rows:
        try:
            example = normalize(rename_columns(row, row.columns or {}), row.format, row.origin)
        except DataError as exc:
            problems.append(RowProblem(row.origin, exc.reason, str(exc)))
            continue
        example["_origin"], example["_format"] = row.origin, row.format
        out.append(Row(example, row.origin, row.format, row.columns, row.source))
    return out


def _example_text(example: dict[str, Any]) -> str:
    """The text that identifies a row for dedup: every turn (prompt and answer), or the raw text."""
    if not example["turns"]:
        return example["text"]
    text = "\n".join(f"{user}\n{answer}" for user, answer in example["turns"])
    return text + ("\n" + example["rejected"] if "rejected" in example else "")


def _tokenize(examples: list[dict[str, Any]], cfg: DataConfig, templates: dict[str, str], tokenizer: Any,
              with_text: bool) -> tuple[list[dict], dict[str, Any]]:
    out: list[dict] = []
    truncated = dropped = tokens = 0
    for example in examples:
        segments = render(example, templates[example["_format"]], tokenizer)
        if cfg.train_on == "last_turn" and example["turns"]:
            segments = last_turn_only(segments)
        tok = tokenize(segments, tokenizer, max_length=cfg.max_length, truncation_side=cfg.truncation_side,
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
