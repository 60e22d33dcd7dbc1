"""`data.filters`: drop rows by what they say (boilerplate phrases, a regex, length bounds, text that
repeats itself), before dedup and the split, so neither side keeps them. Each dropped row is
counted once, under the first filter that matched, with its file:line and why."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rayft.data.bad_rows import write_records
from rayft.data.readers import Row


@dataclass
class Filtered:
    origin: str  # file:line
    filter: str  # the filter's label
    reason: str  # what matched


def apply_filters(rows: list[Row], filters: Sequence[Any]) -> tuple[list[Row], list[Filtered]]:
    if not filters:
        return rows, []
    compiled = [(f, re.compile(f.regex) if f.regex else None) for f in filters]
    kept, dropped = [], []
    for row in rows:
        hit = None
        for spec, pattern in compiled:
            reason = _match(spec, pattern, row.data)
            if reason is not None:
                hit = Filtered(row.origin, spec.label, reason)
                break
        if hit is None:
            kept.append(row)
        else:
            dropped.append(hit)
    return kept, dropped


def texts(example: dict[str, Any], field: str) -> list[str]:
    """The texts of a normalized example that a filter on `field` reads."""
    turns = example.get("turns") or []
    if not turns:  # raw text rows: their text is every field
        return [example.get("text") or ""]
    prompt = [example["system"]] if example.get("system") else []
    prompt += [user for user, _ in turns]
    answer = [reply for _, reply in turns if reply is not None]
    rejected = [example["rejected"]] if isinstance(example.get("rejected"), str) else []
    return {"prompt": prompt, "answer": answer, "rejected": rejected}.get(field, prompt + answer + rejected)


def repetition(text: str, n: int) -> float:
    """The share of the text's word n-grams that already occurred earlier in it."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def _match(spec: Any, pattern: re.Pattern | None, example: dict[str, Any]) -> str | None:
    for text in texts(example, spec.field):
        lowered = text.lower()
        for phrase in spec.contains:
            if phrase.lower() in lowered:
                return f"contains {phrase!r}"
        if pattern is not None and pattern.search(text):
            return f"matches {spec.regex!r}"
        if spec.min_chars is not None and len(text) < spec.min_chars:
            return f"{len(text)} characters < min_chars {spec.min_chars}"
        if spec.max_chars is not None and len(text) > spec.max_chars:
            return f"{len(text)} characters > max_chars {spec.max_chars}"
        if spec.max_repetition is not None:
            share = repetition(text, spec.ngram)
            if share > spec.max_repetition:
                return f"repeats itself: {share:.2f} of its {spec.ngram}-grams > max_repetition {spec.max_repetition}"
    return None


def count_by_filter(dropped: list[Filtered]) -> dict[str, int]:
    return dict(Counter(item.filter for item in dropped))


def write_filtered(dropped: list[Filtered], path: Path) -> None:
    write_records(dropped, path)
