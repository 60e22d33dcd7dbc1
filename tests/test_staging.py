"""rayft.core.publish.staged_folder: a folder appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayft.core.publish import staged_folder


def test_finished_block_renames_the_staging_folder_into_place(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "adapter"
    with staged_folder(target) as staging:
        assert staging.parent == target.parent and staging.is_dir() and not target.exists()
        (staging / "weights.bin").write_text("new")
    assert (target / "weights.bin").read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["adapter"], "no staging folder is left"


def test_replace_swaps_an_old_folder_for_the_new_one(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    with staged_folder(target) as staging:
        (staging / "weights.bin").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]


def test_an_error_keeps_the_old_folder_and_leaves_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights.bin").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_folder(target) as staging:
            (staging / "weights.bin").write_text("half")
            raise RuntimeError("disk full")
    assert (target / "weights.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_without_replace_a_finished_folder_already_there_wins(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "a@1"
    target.mkdir(parents=True)
    (target / "adapter_config.json").write_text("{}")
    with pytest.raises(OSError):
        with staged_folder(target, replace=False) as staging:
            (staging / "adapter_config.json").write_text('{"mine": 1}')
    assert (target / "adapter_config.json").read_text() == "{}"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a@1"]
