"""Where rayft keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path


def rayft_home() -> Path:
    """The cache root: `$RAYFT_HOME`, default `~/.cache/rayft`."""
    return Path(os.environ.get("RAYFT_HOME") or Path.home() / ".cache" / "rayft").expanduser()
