"""Write a folder whole or not at all: build it in a hidden sibling, then rename it into place.

Readers (a server loading an adapter, a later stage, another process waiting for a cached model)
see either no folder, the old one, or the finished new one, never a half-written one; an error or
an interrupted write leaves nothing but, at worst, a `.<name>.partial-*` sibling that nothing reads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial-"  # in every staging folder's name: registrations and readers skip these


@contextmanager
def staged_folder(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; when the block ends without an error, rename
    it to `target`. An existing `target` is removed first when `replace`; otherwise the rename fails
    with OSError if a finished `target` is already there (someone else won). The staging folder is
    removed whatever happens."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}{PARTIAL}"))
    try:
        yield staging
        if replace and target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all: a hidden sibling, then `os.replace` onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
