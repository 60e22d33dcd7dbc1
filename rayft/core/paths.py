"""Where rayft keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path


def rayft_home() -> Path:
    """The cache root: `$RAYFT_HOME`, default `~/.cache/rayft`."""
    return Path(os.environ.get("RAYFT_HOME") or Path.home() / ".cache" / "rayft").expanduser()


def resolve_path(path: str, folder: Path) -> str:
    """A path as written in a file of `folder` (a config, a registry): relative paths against that
    folder, `~` expanded; URIs (`scheme://...`) and hub specs (`hf:...`) as they are."""
    if "://" in path or path.startswith("hf:"):
        return path
    local = Path(path).expanduser()
    return str(local if local.is_absolute() else (folder / local).resolve())


def absolute_path(path: str) -> str:
    """A path given on a command line or served (adapter stores, merged models): against the current
    directory; URIs as they are."""
    return path if "://" in path else str(Path(path).expanduser().absolute())


def file_safe(name: str) -> str:
    """A model or stage name as a file name: letters, digits, - and _ kept, the rest _."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
