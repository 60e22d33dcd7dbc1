"""The adapter store: adapters registered by id, each a standard PEFT folder.

Layout of a local store (a directory, or a `file://` URI):

    <store>/<id>                    -> .versions/<id>@<version>   (a relative symlink)
    <store>/.versions/<id>@<version>/adapter_config.json, adapter_model.safetensors, rayft-adapter.json

Registering copies the adapter into a new `.versions/` folder and then swaps the `<id>` link with
`os.replace`, so a reader sees the old adapter or the new one, never a half-copied folder, and a
running app serves the new version on its next request (the version is part of the multiplexed
model id, so replicas load it fresh). A plain adapter folder copied by hand to `<store>/<id>/` is
served too (its version is its `adapter_config.json` mtime).

Ids must match `NAME_PATTERN` (no `/`, no leading `.`), and the resolved folder must lie inside the
store, so a request's `model` can never name a path outside it (`../x`, absolute paths, symlinks
pointing out). Object stores (`s3://`, `gs://`, ...) are `rayft.serve.object_store.ObjectAdapterStore`;
`open_store` picks the implementation from the URI. What both kinds share (ids, versions, refs,
the registration record) is in `rayft.serve.adapter_ref`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from rayft.core.errors import UserError
from rayft.serve.adapter_ref import (META_FILE, NOT_COPIED, VERSIONS, AdapterRef, AdapterStore, check_source,
                                     source_meta, valid_id, valid_version)
from rayft.serve.object_store import ObjectAdapterStore
from rayft.core.publish import staged_folder

class LocalAdapterStore:
    """A store on a (local or shared) filesystem."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def list_adapters(self) -> list[AdapterRef]:
        if not self.root.is_dir():
            return []
        refs = (self.resolve(p.name) for p in sorted(self.root.iterdir()) if valid_id(p.name))
        return [r for r in refs if r is not None]

    def resolve(self, adapter_id: str) -> AdapterRef | None:
        """The current version of `adapter_id`, or None (unknown or invalid id, or not an adapter)."""
        if not valid_id(adapter_id):
            return None
        entry = self.root / adapter_id
        try:
            target = entry.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        root = self.root.resolve()
        if entry.is_symlink():
            if target.parent != root / VERSIONS or not target.name.startswith(adapter_id + "@"):
                return None  # a link pointing anywhere else is not ours to serve
            version = target.name.split("@", 1)[1]
        elif target.parent == root and target.is_dir():
            config = target / "adapter_config.json"
            version = f"m{config.stat().st_mtime_ns:x}" if config.is_file() else ""
        else:
            return None
        if not (target / "adapter_config.json").is_file():
            return None
        return AdapterRef(adapter_id, version, target)

    def resolve_key(self, key: str) -> AdapterRef | None:
        """The adapter of a multiplexed key `<id>@<version>`, also after a newer registration."""
        adapter_id, _, version = key.partition("@")
        current = self.resolve(adapter_id)
        if current is not None and current.version == version:
            return current
        if not valid_id(adapter_id) or not valid_version(version):
            return None
        path = self.root / VERSIONS / f"{adapter_id}@{version}"
        return AdapterRef(adapter_id, version, path) if (path / "adapter_config.json").is_file() else None

    def local_path(self, ref: AdapterRef) -> Path:
        return ref.path

    def register(self, source: Path, adapter_id: str) -> AdapterRef:
        check_source(source, adapter_id)
        entry = self.root / adapter_id
        if entry.exists() and not entry.is_symlink():
            raise UserError(f"{entry} is a folder copied by hand; remove it before registering '{adapter_id}'")
        versions = self.root / VERSIONS
        versions.mkdir(parents=True, exist_ok=True)
        version = f"{time.time_ns():x}"
        final = versions / f"{adapter_id}@{version}"
        with staged_folder(final, replace=False) as staging:
            shutil.copytree(source, staging, ignore=shutil.ignore_patterns(*NOT_COPIED), dirs_exist_ok=True)
            meta = source_meta(source, adapter_id, version)
            (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        link = self.root / f".{adapter_id}.{version}.link"
        os.symlink(Path(VERSIONS) / final.name, link)
        os.replace(link, entry)  # atomic: readers see the old version or the new one
        return AdapterRef(adapter_id, version, final)


def open_store(uri: str) -> AdapterStore:
    """The store at `uri`: a directory path or `file://` URI (symlinked versions), or any other
    `scheme://` URI (s3, gs, az, local, memory, ...): an object store through fsspec."""
    if uri.startswith("file://"):
        return LocalAdapterStore(uri[len("file://"):])
    if "://" in uri:
        return ObjectAdapterStore(uri)
    return LocalAdapterStore(uri)


def find_adapter(path: str | Path, stage: str | None = None) -> Path:
    """The adapter folder of `path`: an adapter folder itself, a stage dir (<stage>/adapter), or a
    run dir (its last stage with an adapter, in the run's stage order, unless `stage` is named)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"{path}: no such directory (expected a rayft run, a stage folder or an adapter folder)")
    if (path / "adapter_config.json").is_file() and stage is None:
        return path
    if (path / "adapter" / "adapter_config.json").is_file() and stage is None:
        return path / "adapter"
    stages = _stage_order(path)
    if stage is not None:
        stages = [stage]
    found = [path / s / "adapter" for s in stages if (path / s / "adapter" / "adapter_config.json").is_file()]
    if not found:
        what = f"stage '{stage}'" if stage else "any stage"
        raise UserError(f"{path}: no finished adapter in {what} (looked for <run>/<stage>/adapter/adapter_config.json)")
    return found[-1]


def _stage_order(run_dir: Path) -> list[str]:
    """Stage folder names in the order the run's config lists them (else by name)."""
    import yaml

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        names = [s.get("name") or s.get("type") for s in config.get("stages", []) if isinstance(s, dict)]
        if names:
            return [n for n in names if n]
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return sorted(p.name for p in run_dir.iterdir() if p.is_dir())
