"""The checkpoint manifests (no Ray): an intact multi-rank checkpoint verifies; a missing
marker, a missing rank, a truncated or altered file each make it fail with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayft.records.checkpoints import MANIFEST, verify_checkpoint, write_manifest


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """Each rank's local checkpoint folder, merged into one (as Ray's upload does): rank 0 wrote
    weights, optimizer and state, rank 1 only its RNG state (as HF does)."""
    import shutil

    rank0, rank1, merged = tmp_path / "r0", tmp_path / "r1", tmp_path / "merged"
    for folder in (rank0, rank1):
        folder.mkdir()
    (rank0 / "adapter_model.safetensors").write_bytes(b"w" * 4096)
    (rank0 / "optimizer.pt").write_bytes(b"o" * 1000)
    (rank0 / "trainer_state.json").write_text('{"global_step": 6}')
    (rank0 / "rng_state_0.pth").write_bytes(b"r0")
    (rank1 / "rng_state_1.pth").write_bytes(b"r1")
    write_manifest(rank0, rank=0, world_size=2, step=6)
    write_manifest(rank1, rank=1, world_size=2, step=6)
    shutil.copytree(rank0, merged)
    shutil.copytree(rank1, merged, dirs_exist_ok=True)
    return merged


def test_intact_checkpoint_verifies(checkpoint):
    assert verify_checkpoint(checkpoint) == (6, None)


def test_missing_marker_is_incomplete(checkpoint):
    (checkpoint / MANIFEST.format(rank=0)).unlink()
    step, problem = verify_checkpoint(checkpoint)
    assert step is None and "incomplete" in problem


def test_missing_rank_manifest(checkpoint):
    (checkpoint / MANIFEST.format(rank=1)).unlink()
    assert verify_checkpoint(checkpoint) == (6, "missing or unreadable rayft-manifest-rank1.json")


def test_truncated_file(checkpoint):
    with (checkpoint / "adapter_model.safetensors").open("r+b") as f:
        f.truncate(100)
    step, problem = verify_checkpoint(checkpoint)
    assert step == 6 and problem == "adapter_model.safetensors has 100 bytes, the manifest says 4096"


def test_altered_bytes_same_size(checkpoint):
    (checkpoint / "optimizer.pt").write_bytes(b"x" * 1000)
    assert verify_checkpoint(checkpoint)[1] == "optimizer.pt does not match its sha256"


def test_missing_file_of_another_rank(checkpoint):
    (checkpoint / "rng_state_1.pth").unlink()
    assert verify_checkpoint(checkpoint)[1] == "missing file rng_state_1.pth"


def test_each_rank_lists_only_its_files(checkpoint):
    import json

    rank1 = json.loads((checkpoint / MANIFEST.format(rank=1)).read_text())
    assert "rng_state_1.pth" in rank1["files"]
    rank0 = json.loads((checkpoint / MANIFEST.format(rank=0)).read_text())
    assert "rng_state_1.pth" not in rank0["files"] and "adapter_model.safetensors" in rank0["files"]
