"""What is under a storage path: runs (`rayft train`), sweeps (`rayft tune`), their status and curves.

Read-only views over the files runs already write (config.yaml, <stage>/summary.json,
<stage>/progress.json, <stage>/tensorboard/, report.md, a sweep's results.json), for the web UI
and anything else that lists runs. Nothing here starts, changes or deletes a run.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rayft.records.attempts import read_progress
from rayft.records.rundir import read_summary

# A stage whose progress.json has not moved for this long while its summary still says "running"
# is shown as "stale" (its driver died or was stopped without writing the final status).
STALE_AFTER_S = 600


@dataclass
class StageState:
    name: str
    type: str
    status: str  # pending | running | completed | failed | interrupted | stopped | stale
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    error: str | None = None


@dataclass
class RunState:
    name: str
    path: Path
    status: str
    stages: list[StageState] = field(default_factory=list)
    updated: float = 0.0
    report: Path | None = None

    @property
    def current(self) -> StageState | None:
        """The stage that is running, else the last one that started, else the first."""
        started = [s for s in self.stages if s.status != "pending"]
        running = [s for s in started if s.status == "running"]
        return (running or started or self.stages or [None])[-1]


@dataclass
class SweepState:
    name: str
    path: Path
    metric: str | None
    mode: str | None
    trials: list[dict[str, Any]]  # results.json's trial rows, or the trial folders of a running sweep
    best_trial: str | None
    best_config: Path | None
    finished: bool


def is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() and not (path / "results.json").is_file() and not any(
        path.glob("experiment_state-*.json"))


def is_sweep(path: Path) -> bool:
    return (path / "results.json").is_file() or any(path.glob("experiment_state-*.json"))


def list_runs(storage: Path) -> list[RunState]:
    """Every run directly under `storage`, newest first."""
    if not storage.is_dir():
        return []
    runs = [run_state(p) for p in storage.iterdir() if p.is_dir() and is_run(p)]
    return sorted(runs, key=lambda r: r.updated, reverse=True)


def run_state(run_dir: Path) -> RunState:
    stages = [_stage_state(run_dir / name, name, kind) for name, kind in _stage_plan(run_dir)]
    statuses = {s.status for s in stages}
    for status in ("failed", "stale", "interrupted", "running", "stopped"):
        if status in statuses:
            overall = status
            break
    else:
        overall = "completed" if stages and statuses == {"completed"} else ("pending" if statuses <= {"pending"}
                                                                            else "running")
    times = [_mtime(run_dir / "config.yaml")] + [_mtime(run_dir / s.name / f) for s in stages
                                                 for f in ("summary.json", "progress.json")]
    report = run_dir / "report.md"
    return RunState(run_dir.name, run_dir, overall, stages, max(times), report if report.is_file() else None)


def _stage_plan(run_dir: Path) -> list[tuple[str, str]]:
    """(name, type) of the run's stages in order, from its config.yaml."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    stages = config.get("stages") if isinstance(config, dict) else None
    return [(str(s.get("name") or s.get("type")), str(s.get("type"))) for s in stages or [] if isinstance(s, dict)]


def _stage_state(stage_dir: Path, name: str, kind: str) -> StageState:
    summary = read_summary(stage_dir) or {}
    progress = read_progress(stage_dir) or {}
    status = str(summary.get("status", "pending"))
    if status == "running" and time.time() - max(_mtime(stage_dir / "progress.json"),
                                                 _mtime(stage_dir / "summary.json")) > STALE_AFTER_S:
        status = "stale"
    losses = progress.get("losses") or []
    loss = summary.get("train_loss") if status == "completed" else (losses[-1][1] if losses else None)
    return StageState(name, kind, status, summary.get("global_step") if status == "completed" else
                      progress.get("global_step"), progress.get("max_steps") or summary.get("global_step"),
                      _number(loss), _number(summary.get("eval_loss")), summary.get("error"))


def curves(stage_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the stage logged to TensorBoard ({tag: [(step, value)]}, e.g. train/loss,
    train/learning_rate, eval/loss, PPO's rewards); the recent losses of progress.json when the
    run logs no TensorBoard files. Readable while the run writes; an event file that has not
    changed since the last call is not read again (the web UI asks every 2 seconds)."""
    found: dict[str, dict[int, float]] = {}
    folder = stage_dir / "tensorboard"
    for events in sorted(folder.rglob("events.out.tfevents.*")) if folder.is_dir() else []:
        try:
            stat = events.stat()
        except OSError:
            continue
        for tag, points in _event_scalars(str(events), stat.st_size, stat.st_mtime_ns):
            found.setdefault(tag, {}).update(points)
    if not found:
        losses = (read_progress(stage_dir) or {}).get("losses") or []
        if losses:
            found["train/loss"] = {int(step): float(value) for step, value in losses}
    return {tag: sorted(points.items()) for tag, points in sorted(found.items())}


@functools.lru_cache(maxsize=256)
def _event_scalars(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, tuple[tuple[int, float], ...]], ...]:
    """The scalars of one event file as it is at (size, mtime): cached on them, so an unchanged
    file is read once. A file being written can end mid-record: what is complete is read now, the
    rest on a later call (when its size has changed)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(path, size_guidance={SCALARS: 0})
    try:
        acc.Reload()
    except Exception:  # noqa: BLE001 - unreadable for now
        return ()
    return tuple((tag, tuple((int(e.step), float(e.value)) for e in acc.Scalars(tag)))
                 for tag in acc.Tags().get("scalars", []))


def list_sweeps(storage: Path) -> list[SweepState]:
    if not storage.is_dir():
        return []
    sweeps = [sweep_state(p) for p in storage.iterdir() if p.is_dir() and is_sweep(p)]
    return sorted(sweeps, key=lambda s: _mtime(s.path), reverse=True)


def sweep_state(sweep_dir: Path) -> SweepState:
    try:
        results = json.loads((sweep_dir / "results.json").read_text())
    except (OSError, ValueError):
        results = None
    best_config = sweep_dir / "best_config.yaml"
    if isinstance(results, dict):
        return SweepState(sweep_dir.name, sweep_dir, results.get("metric"), results.get("mode"),
                          list(results.get("trials") or []), results.get("best_trial"),
                          best_config if best_config.is_file() else None, True)
    trials = []
    for trial in sorted(sweep_dir.glob("trial_*")):
        run = run_state(trial) if (trial / "config.yaml").is_file() else None
        stage = run.current if run else None
        trials.append({"trial_id": trial.name.removeprefix("trial_"), "status": run.status if run else "pending",
                       "steps": stage.step if stage else None, "run_dir": str(trial),
                       "final_metric": stage.eval_loss if stage else None})
    return SweepState(sweep_dir.name, sweep_dir, None, None, trials, None, None, False)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
