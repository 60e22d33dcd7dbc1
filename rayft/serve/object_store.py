"""The adapter store on an object store: `s3://`, `gs://`, `az://`, ... (any fsspec filesystem
whose package is installed: s3fs, gcsfs, adlfs). A Ray cluster's nodes share no disk, so this is
the store a real cluster serves from.

Layout under the store URI:

    <uri>/<id>.json                            {"id": ..., "version": ...}: the current version
    <uri>/.versions/<id>@<version>/adapter_config.json, adapter_model.safetensors, rayft-adapter.json
    <uri>/.latest/<id>/...                     the current version again, in Ray Serve LLM's layout

Object stores have no symlinks and no atomic rename of a folder, but one object's PUT is atomic:
`register` uploads the version folder first (versions are never rewritten) and writes the pointer
object last, so a reader sees the old version or the new one. Replicas fetch a version once per node
into `$RAYFT_HOME/adapter-cache/<store hash>/<id>@<version>` (downloaded beside it, then renamed), and
since versions never change the cache never goes stale. Pointers are re-read at most every
`pointer_ttl_s` seconds (default 1): a new registration is served within that time, without restart.

The `.latest` copy is what the vllm engine serves: Ray Serve LLM loads adapter `<id>` from
`<dynamic_lora_loading_path>/<id>/`, and `serve.engine: vllm` points that path at `<uri>/.latest`.
It is written after the version folder and before the pointer; Ray Serve LLM keeps an adapter it
has loaded until it evicts it, so a re-registration reaches a vllm replica that already holds the
adapter only after eviction or a restart (rayft's engine switches within `pointer_ttl_s`).

`local:///path` stores the same layout on a local or shared disk (fsspec's local filesystem): the
object-store code path, runnable without a cloud account (the tests use it and `memory://`).
"""

from __future__ import annotations

import hashlib
import json
import time
from fnmatch import fnmatch
from pathlib import Path

from rayft.core.errors import UserError
from rayft.core.paths import rayft_home
from rayft.serve.adapter_ref import (LATEST, META_FILE, NOT_COPIED, VERSIONS, AdapterRef, check_source, source_meta,
                                     valid_id, valid_version)
from rayft.core.publish import staged_folder


class ObjectAdapterStore:
    """A store on any fsspec filesystem, addressed by URI."""

    def __init__(self, uri: str, cache_dir: str | Path | None = None, pointer_ttl_s: float = 1.0):
        import fsspec

        self.uri = uri.rstrip("/")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.uri)
        except ImportError as exc:  # e.g. "Install s3fs to access S3"
            raise UserError(f"serve.adapter_store: {uri}: {exc} (pip install it on every node)") from None
        except ValueError as exc:  # unknown protocol
            raise UserError(f"serve.adapter_store: {uri}: {exc}; give a directory, a file:// URI or an "
                            "object-store URI such as s3://bucket/adapters") from None
        self.root = root.rstrip("/")
        digest = hashlib.sha1(self.uri.encode()).hexdigest()[:12]
        self.cache = Path(cache_dir) if cache_dir else rayft_home() / "adapter-cache" / digest
        self.pointer_ttl_s = pointer_ttl_s
        self._pointers: dict[str, tuple[float, AdapterRef | None]] = {}

    def _version_dir(self, adapter_id: str, version: str) -> str:
        return f"{self.root}/{VERSIONS}/{adapter_id}@{version}"

    def list_adapters(self) -> list[AdapterRef]:
        try:
            names = sorted(p.rsplit("/", 1)[-1][:-len(".json")] for p in self.fs.glob(f"{self.root}/*.json"))
        except FileNotFoundError:
            return []
        refs = (self.resolve(n, fresh=True) for n in names if valid_id(n))
        return [r for r in refs if r is not None]

    def resolve(self, adapter_id: str, fresh: bool = False) -> AdapterRef | None:
        """The current version of `adapter_id`, or None (unknown or invalid id, unreadable pointer)."""
        if not valid_id(adapter_id):
            return None
        cached = self._pointers.get(adapter_id)
        if cached and not fresh and time.monotonic() - cached[0] < self.pointer_ttl_s:
            return cached[1]
        ref = None
        try:
            pointer = json.loads(self.fs.cat_file(f"{self.root}/{adapter_id}.json"))
            version = pointer.get("version") if isinstance(pointer, dict) else None
            if valid_version(version):
                ref = AdapterRef(adapter_id, version, Path(self._version_dir(adapter_id, version)))
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            ref = None
        self._pointers[adapter_id] = (time.monotonic(), ref)
        return ref

    def resolve_key(self, key: str) -> AdapterRef | None:
        """The adapter of a multiplexed key `<id>@<version>`, also after a newer registration."""
        adapter_id, _, version = key.partition("@")
        if not valid_id(adapter_id) or not valid_version(version):
            return None
        remote = self._version_dir(adapter_id, version)
        held = (self.cache / key / "adapter_config.json").is_file()  # fetched before: no remote call
        if held or self.fs.exists(f"{remote}/adapter_config.json"):
            return AdapterRef(adapter_id, version, Path(remote))
        return None

    def local_path(self, ref: AdapterRef) -> Path:
        """A local folder holding `ref`'s files: fetched into the node's cache on first use."""
        final = self.cache / ref.key
        if (final / "adapter_config.json").is_file():
            return final
        remote = self._version_dir(ref.id, ref.version)
        try:
            with staged_folder(final, replace=False) as staging:
                for path in self.fs.find(remote):
                    relative = path[len(remote):].lstrip("/")
                    target = staging / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(path, str(target))
                if not (staging / "adapter_config.json").is_file():
                    raise FileNotFoundError(f"{self.uri}: {ref.key} has no adapter_config.json")
        except OSError:  # another process on this node fetched it first (the rename failed): use theirs
            if not (final / "adapter_config.json").is_file():
                raise
        return final

    def register(self, source: Path, adapter_id: str) -> AdapterRef:
        check_source(source, adapter_id)
        version = f"{time.time_ns():x}"
        remote = self._version_dir(adapter_id, version)
        self.fs.makedirs(remote, exist_ok=True)  # a no-op on object stores
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = path.relative_to(source).as_posix()
            if any(fnmatch(part, pattern) for part in relative.split("/") for pattern in NOT_COPIED):
                continue  # as the local store's copytree(ignore=ignore_patterns(*NOT_COPIED))
            self.fs.makedirs(f"{remote}/{relative}".rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(path), f"{remote}/{relative}")
        meta = source_meta(source, adapter_id, version)
        self.fs.pipe_file(f"{remote}/{META_FILE}", (json.dumps(meta, indent=2) + "\n").encode())
        self._publish_latest(remote, adapter_id)
        pointer = {"id": adapter_id, "version": version, "registered_at": meta["registered_at"]}
        self.fs.pipe_file(f"{self.root}/{adapter_id}.json", json.dumps(pointer).encode())  # last: the switch
        ref = AdapterRef(adapter_id, version, Path(remote))
        self._pointers[adapter_id] = (time.monotonic(), ref)
        return ref

    def _publish_latest(self, remote: str, adapter_id: str) -> None:
        """Copy the version folder to `<uri>/.latest/<id>/` (Ray Serve LLM's layout), dropping files
        an older version had and this one has not."""
        latest = f"{self.root}/{LATEST}/{adapter_id}"
        wanted = {p[len(remote):].lstrip("/") for p in self.fs.find(remote)}
        try:
            stale = [p for p in self.fs.find(latest) if p[len(latest):].lstrip("/") not in wanted]
        except FileNotFoundError:
            stale = []
        for relative in sorted(wanted):
            self.fs.makedirs(f"{latest}/{relative}".rsplit("/", 1)[0], exist_ok=True)
            self.fs.copy(f"{remote}/{relative}", f"{latest}/{relative}")
        if stale:
            self.fs.rm(stale)
