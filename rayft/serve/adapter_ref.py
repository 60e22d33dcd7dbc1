"""What every adapter store shares: valid ids and versions, the `AdapterRef` a lookup returns, the
`AdapterStore` protocol, and the checks and record of a registration (`rayft-adapter.json`)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rayft.core.errors import UserError
from rayft.schema.serve import NAME_PATTERN

VERSIONS = ".versions"
LATEST = ".latest"  # object stores: each adapter's current version in Ray Serve LLM's layout (vllm engine)
META_FILE = "rayft-adapter.json"
NOT_COPIED = ("checkpoint-*", "*.partial*")  # names (files or folders) a registration leaves out
_ID = re.compile(NAME_PATTERN)
_VERSION = re.compile(r"[0-9a-f]+")


def valid_id(adapter_id: object) -> bool:
    return isinstance(adapter_id, str) and bool(_ID.match(adapter_id)) and ".." not in adapter_id


def valid_version(version: object) -> bool:
    """Versions are the hex registration time: never a path."""
    return isinstance(version, str) and bool(_VERSION.fullmatch(version))


@dataclass(frozen=True)
class AdapterRef:
    id: str
    version: str
    path: Path

    @property
    def key(self) -> str:
        """The multiplexed model id: a new registration under the same id is a new key."""
        return f"{self.id}@{self.version}"


class AdapterStore(Protocol):
    uri: str

    def list_adapters(self) -> list[AdapterRef]: ...

    def resolve(self, adapter_id: str) -> AdapterRef | None: ...

    def resolve_key(self, key: str) -> AdapterRef | None: ...

    def register(self, source: Path, adapter_id: str) -> AdapterRef: ...

    def local_path(self, ref: AdapterRef) -> Path:
        """A local folder with `ref`'s files (an object store fetches it into a node cache first)."""
        ...


def check_source(source: Path, adapter_id: str) -> None:
    """Refuse an invalid id or a folder that is not a PEFT adapter, before anything is written."""
    if not valid_id(adapter_id):
        raise UserError(f"--id {adapter_id!r}: an adapter id is 1-64 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit")
    if not (source / "adapter_config.json").is_file():
        raise UserError(f"{source}: not a PEFT adapter folder (no adapter_config.json)")


def source_meta(source: Path, adapter_id: str, version: str) -> dict:
    """What a store records beside a registered adapter (`rayft-adapter.json`)."""
    return {"id": adapter_id, "version": version, "source": str(source.resolve()),
            "registered_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "base_model": _base_model_of(source)}


def _base_model_of(adapter_dir: Path) -> str | None:
    try:
        return json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        return None
