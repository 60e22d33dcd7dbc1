"""Read rows from local jsonl / json / csv / parquet files, or a folder of them.

Every row keeps its origin (`file:line` for jsonl and csv, `file:#index` otherwise) so that
later steps can name the exact row they reject. Input files are only ever read.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from rayft.data.bad_rows import RowProblem
from rayft.core.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class Row:
    data: dict[str, Any]
    origin: str  # "path:line" or "path:#index"
    format: str | None = None  # set by rayft.data.sources: the source's format
    columns: dict[str, str] | None = None  # the source's column mapping
    source: int = 0  # index of the source in data.sources


def read_rows(paths: str | Iterable[str], problems: list[RowProblem] | None = None) -> list[Row]:
    """All rows of every file in `paths` (a file, a folder, `hf:<dataset>[:<split>]`, or a list).

    A bad row (invalid JSON, not an object, not UTF-8) raises a DataError naming file:line, or,
    when a `problems` list is given, is recorded there and left out. A file that cannot be read
    at all always raises."""
    rows: list[Row] = []
    for path in [paths] if isinstance(paths, str) else paths:
        if path.startswith("hf:"):
            rows.extend(_hub_rows(path))
            continue
        for file in _files(Path(path)):
            rows.extend(_read_file(file, problems))
    return rows


def _problem(problems: list[RowProblem] | None, origin: str, reason: str, message: str) -> None:
    problem = RowProblem(origin, reason, f"{origin}: {message}")
    if problems is None:
        raise DataError(problem.detail)
    problems.append(problem)


def _hub_rows(spec: str) -> list[Row]:
    """`hf:<dataset>[:<split>]` through `datasets.load_dataset` (its local cache, or a reachable hub)."""
    name, _, split = spec[3:].partition(":")
    split = split or "train"
    try:
        from datasets import load_dataset

        dataset = load_dataset(name, split=split)
    except (OSError, ValueError) as exc:  # offline / not found (OSErrors), a bad split (ValueError)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data.path: cannot load dataset '{name}' split '{split}' ({first}); without a "
                        "reachable hub, use local files") from exc
    return [Row(dict(item), f"{spec}:#{index}") for index, item in enumerate(dataset)]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"data.path: {path} holds no {'/'.join(SUFFIXES)} files")
        return files
    if not path.is_file():
        raise DataError(f"data.path: {path}: no such file or directory")
    if path.suffix not in SUFFIXES:
        raise DataError(f"data.path: {path}: unsupported file type '{path.suffix}' "
                        f"(supported: {', '.join(SUFFIXES)})")
    return [path]


def _read_file(file: Path, problems: list[RowProblem] | None) -> list[Row]:
    try:
        if file.suffix == ".jsonl":
            rows = list(_jsonl(file, problems))
        else:
            rows = list({".json": _json, ".csv": _csv, ".parquet": _parquet}[file.suffix](file))
    except UnicodeDecodeError as exc:  # .json / .csv are decoded whole: the file as a whole is bad
        raise DataError(f"{file}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    if not rows and not problems:
        raise DataError(f"{file}: no rows")
    return rows


def _jsonl(file: Path, problems: list[RowProblem] | None):
    with file.open("rb") as fh:  # bytes, so one non-UTF-8 line is one bad row, not a crash
        for number, raw in enumerate(fh, start=1):
            origin = f"{file}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                _problem(problems, origin, "not UTF-8", f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                         f"{exc.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                _problem(problems, origin, "invalid JSON", f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                _problem(problems, origin, "not a JSON object", f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield Row(obj, origin)


def _json(file: Path):
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise DataError(f"{file}: expected a JSON list of objects (or {{\"data\": [...]}})")
    for index, item in enumerate(obj):
        if not isinstance(item, dict):
            raise DataError(f"{file}:#{index}: expected a JSON object, got {type(item).__name__}")
        yield Row(item, f"{file}:#{index}")


def _csv(file: Path):
    with file.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            if None in row:
                raise DataError(f"{file}:{reader.line_num}: more fields than the header has")
            yield Row(dict(row), f"{file}:{reader.line_num}")


def _parquet(file: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as exc:  # a bad or unreadable file (ArrowInvalid, ...)
        raise DataError(f"{file}: not a readable parquet file ({exc})") from exc
    for index, item in enumerate(table.to_pylist()):
        yield Row(item, f"{file}:#{index}")
