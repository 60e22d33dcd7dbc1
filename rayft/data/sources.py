"""Read a stage's sources, and mix them by weight.

Each row remembers its source (index, format, column mapping), so sources of different formats
(e.g. alpaca files and chat files) mix in one stage. Weights are applied to the training split
only, after dedup and the split, so a repeated row can never leak into the held-out set:
a weight of 2 repeats a source twice, 0.5 keeps a seeded half, 1.5 is one copy plus a seeded half.
"""

from __future__ import annotations

import math
import random
from typing import Any

from rayft.schema.sections import DataConfig
from rayft.data.formats import detect_format
from rayft.data.readers import Row, read_rows
from rayft.core.errors import DataError


def load_sources(cfg: DataConfig, problems: list | None = None) -> tuple[list[Row], list[dict[str, Any]]]:
    """All rows of all sources, unweighted, and a description of each source for the stats."""
    sources = cfg.source_list()
    if not sources:
        raise DataError("data.path: no training data given (set data.path to a jsonl/json/csv/parquet file, "
                        "or data.sources)")
    rows: list[Row] = []
    described = []
    for index, source in enumerate(sources):
        read = read_rows(source.path, problems)
        if not read:
            raise DataError(f"data.path: {source.path} has no usable rows")
        columns = {**cfg.columns, **source.columns}
        fmt = source.format or cfg.format
        if fmt == "auto":
            fmt = detect_format(read, columns)
        for row in read:
            row.format, row.columns, row.source = fmt, columns, index
        described.append({"path": source.path, "format": fmt, "rows": len(read), "weight": source.weight})
        rows.extend(read)
    return rows, described


def apply_weights(rows: list[Row], cfg: DataConfig) -> tuple[list[Row], list[int]]:
    """The training rows mixed by source weight, and how many rows each source contributed."""
    sources = cfg.source_list()
    mixed: list[Row] = []
    used = []
    for index, source in enumerate(sources):
        own = [r for r in rows if r.source == index]
        picked = weighted(own, source.weight, seed=cfg.seed + index)
        used.append(len(picked))
        mixed.extend(picked)
    return mixed, used


def weighted(rows: list[Row], weight: float, seed: int) -> list[Row]:
    whole, frac = int(math.floor(weight)), weight - math.floor(weight)
    picked = rows * whole
    if frac > 0 and rows:
        extra = sorted(random.Random(seed).sample(range(len(rows)), round(len(rows) * frac)))
        picked += [rows[i] for i in extra]
    return picked
