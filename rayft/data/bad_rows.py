"""Bad rows: collected (not raised one at a time), then failed on or skipped per `data.on_error`.

`fail` stops with every bad row listed as `file:line: reason`; `skip` drops them, counts them by
reason in the stats and writes them to `<run>/<stage>/data/skipped_rows.jsonl`. Either way the
input files are never modified, and an empty result is an error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rayft.core.errors import DataError

SHOWN = 20  # lines in a `fail` message; the rest are counted
GROUPED = 3  # rows failing with the same message, from this many on, are said once
EXAMPLES = 3  # file:line examples of such a group


@dataclass
class RowProblem:
    origin: str  # file:line
    reason: str  # short category, e.g. "invalid JSON"
    detail: str  # the full message

    def __str__(self) -> str:
        return self.detail

    @property
    def message(self) -> str:
        """The detail without its file:line (what rows failing the same way have in common)."""
        prefix = f"{self.origin}: "
        return self.detail[len(prefix):] if self.detail.startswith(prefix) else self.detail


def raise_if_any(problems: list[RowProblem], on_error: str) -> None:
    """With `fail`, one error naming the bad rows and the fix. Rows that fail the same way are said
    once ("500 rows: missing field 'prompt' ...") with a few of their file:line, not 500 times."""
    if not problems or on_error == "skip":
        return
    groups: dict[str, list[RowProblem]] = {}
    for p in problems:
        groups.setdefault(p.message, []).append(p)
    lines: list[str] = []
    for message, group in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        if len(group) >= GROUPED:
            more = f" and {len(group) - EXAMPLES} more" if len(group) > EXAMPLES else ""
            lines.append(f"  {len(group)} rows: {message}\n    e.g. "
                         + ", ".join(p.origin for p in group[:EXAMPLES]) + more)
        else:
            lines += [f"  {p.detail}" for p in group]
    if len(lines) > SHOWN:
        lines = lines[:SHOWN] + [f"  ... and {len(lines) - SHOWN} more"]
    raise DataError(f"{len(problems)} bad row{'s' * (len(problems) > 1)} in the data "
                    "(set data.on_error: skip to drop them and train on the rest):\n" + "\n".join(lines))


def count_by_reason(problems: list[RowProblem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.reason] = counts.get(p.reason, 0) + 1
    return counts


def write_problems(problems: list[RowProblem], path: Path) -> None:
    write_records(problems, path)


def write_records(records: list, path: Path) -> None:
    """Dataclass records (bad rows, filtered rows), one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records))
