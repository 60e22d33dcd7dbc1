"""Bad rows: collected (not raised one at a time), then failed on or skipped per `data.on_error`.

`fail` stops with every bad row listed as `file:line: reason`; `skip` drops them, counts them by
reason in the stats and writes them to `<run>/<stage>/data/skipped_rows.jsonl`. Either way the
input files are never modified, and an empty result is an error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rayft.errors import DataError

SHOWN = 20  # bad rows listed in a `fail` message; the rest are counted


@dataclass
class RowProblem:
    origin: str  # file:line
    reason: str  # short category, e.g. "invalid JSON"
    detail: str  # the full message

    def __str__(self) -> str:
        return self.detail


def raise_if_any(problems: list[RowProblem], on_error: str) -> None:
    """With `fail`, one error naming every bad row (the first SHOWN of them) and the fix."""
    if not problems or on_error == "skip":
        return
    lines = [f"  {p.detail}" for p in problems[:SHOWN]]
    if len(problems) > SHOWN:
        lines.append(f"  ... and {len(problems) - SHOWN} more")
    raise DataError(f"{len(problems)} bad row{'s' * (len(problems) > 1)} in the data "
                    "(set data.on_error: skip to drop them and train on the rest):\n" + "\n".join(lines))


def count_by_reason(problems: list[RowProblem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.reason] = counts.get(p.reason, 0) + 1
    return counts


def write_problems(problems: list[RowProblem], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in problems))
