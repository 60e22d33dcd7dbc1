"""The run directory contract: `<storage>/<run>/<stage>/` with config.yaml, summary.json,
adapter/ (or model/), tensorboard/ and plots/."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from rayft.core.publish import write_text_atomic

METRICS_FILE = "worker_metrics.json"  # rank 0's final figures, merged into summary.json
STOPPED_FILE = "stopped.json"  # a sweep scheduler's stop: outranks any later status write
VERSIONED = ("rayft", "ray", "torch", "transformers", "peft", "trl", "accelerate", "datasets")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def read_summary(stage_dir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((stage_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        summary = None
    stopped = _read_json(stage_dir / STOPPED_FILE)
    return {**(summary or {}), **stopped} if stopped else summary


def write_summary(stage_dir: Path, **fields: Any) -> dict[str, Any]:
    summary = {**(read_summary(stage_dir) or {}), **fields, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    summary.update(_read_json(stage_dir / STOPPED_FILE) or {})
    summary.setdefault("versions", versions())
    write_json_atomic(stage_dir / "summary.json", summary)
    return summary


def mark_stopped(stage_dir: Path, reason: str) -> dict[str, Any]:
    """Record that a sweep's scheduler stopped this stage. Stopping a trial removes its workers, and
    the failure that causes can reach the trial's driver after the sweep recorded the stop (the two
    run in different processes), so the stop lives in its own file that every later summary read or
    write honours, whichever order the two writes come in."""
    write_json_atomic(stage_dir / STOPPED_FILE, {"status": "stopped", "error": reason})
    return write_summary(stage_dir)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None


def summary_scalars(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures of a stage summary (what a Tune trial reports; global_step is the
    scheduler's clock)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def stage_output(stage_dir: Path) -> Path | None:
    """The finished adapter (or full model) of a stage, if any."""
    for name in ("adapter", "model"):
        if (stage_dir / name).is_dir():
            return stage_dir / name
    return None


def pop_worker_metrics(stage_dir: Path) -> dict[str, Any]:
    path = stage_dir / METRICS_FILE
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    path.unlink()
    return metrics
