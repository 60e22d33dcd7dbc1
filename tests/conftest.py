"""Shared fixtures. Tests use a private model cache (RAYFT_HOME) so they never touch the user's,
and one local Ray cluster per session for the tests marked `ray`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before anything imports rayft, and inherited by Ray workers started from this process.
os.environ.setdefault("RAYFT_HOME", tempfile.mkdtemp(prefix="rayft-test-home-"))
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_DATA = REPO / "rayft" / "demo" / "extract_orders.jsonl"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with 2 CPUs (this machine's size), shared by the tests that need one."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=True, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray cluster (a head and two 1-CPU nodes labelled node_a / node_b on 127.0.0.1;
    tests/local_cluster.py), one per test module that asks for it, stopped after the module."""
    from local_cluster import LocalCluster

    started = LocalCluster(["node_a", "node_b"], os.environ["RAYFT_HOME"])
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from rayft.models.loader import resolve_model

    return resolve_model("builtin:tiny-random")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_path):
    from rayft.models.loader import load_tokenizer

    return load_tokenizer(tiny_model_path)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
