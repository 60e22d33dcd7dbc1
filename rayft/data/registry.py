"""Read the dataset registry (rayft.schema.datasets) and fill a config's `data.dataset` in: the
entry's path, format, column mapping and held-out file, where the data section does not set
them itself. Errors name the config field or the registry file and entry."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rayft.core.errors import ConfigError
from rayft.core.paths import resolve_path
from rayft.schema.datasets import DatasetEntry, DatasetRegistry

DEFAULT_REGISTRY = "datasets.yaml"


def load_registry(path: Path) -> DatasetRegistry:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the dataset registry ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML") from None
    try:
        return DatasetRegistry.model_validate(raw)
    except ValidationError as err:
        problems = [f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{path}: invalid dataset registry:\n" + "\n".join(problems)) from None


def describe_registry(path: Path) -> str:
    """`rayft data datasets`: each name with where its rows are, their format, and whether the
    files are there."""
    if not path.is_file():
        raise ConfigError(f"{path}: no dataset registry here (see docs/data.md)")
    lines = [f"{path}:"]
    for name, entry in load_registry(path).datasets.items():
        paths = _entry_paths(entry, path.parent)
        listed = [paths] if isinstance(paths, str) else paths
        missing = [p for p in listed if not p.startswith("hf:") and "://" not in p and not Path(p).exists()]
        state = f"  MISSING: {', '.join(missing)}" if missing else ""
        lines.append(f"  {name}: {', '.join(listed)} (format {entry.format}){state}")
        if entry.description:
            lines.append(f"      {entry.description}")
    return "\n".join(lines)


def registry_path(data: Any, base_dir: Path) -> Path:
    path = Path(data.registry or DEFAULT_REGISTRY).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def fill_dataset(data: Any, field: str, base_dir: Path) -> None:
    """Replace `data.dataset` (at config path `field`) by its registry entry's settings."""
    path = registry_path(data, base_dir)
    if not path.is_file():
        raise ConfigError(f"{field}.dataset: '{data.dataset}' needs a dataset registry, and {path} does not "
                          f"exist (write one, see docs/data.md, or set {field}.registry)")
    registry = load_registry(path)
    entry = registry.datasets.get(data.dataset)
    if entry is None:
        close = difflib.get_close_matches(data.dataset, list(registry.datasets), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{field}.dataset: '{data.dataset}' is not in {path} (it has: "
                          f"{', '.join(registry.datasets) or 'nothing'}){hint}")
    explicit = data.model_fields_set
    data.dataset = None  # what stays in the run's config.yaml is the concrete source
    data.path = _entry_paths(entry, path.parent)
    if "format" not in explicit:
        data.format = entry.format
    data.columns = {**entry.columns, **data.columns}
    if data.eval_path is None and entry.eval_path is not None:
        data.eval_path = resolve_path(entry.eval_path, path.parent)


def _entry_paths(entry: DatasetEntry, folder: Path) -> str | list[str]:
    paths = [entry.path] if isinstance(entry.path, str) else list(entry.path)
    resolved = [f"{p}:{entry.split}" if entry.split else resolve_path(p, folder) for p in paths]
    return resolved[0] if isinstance(entry.path, str) else resolved


