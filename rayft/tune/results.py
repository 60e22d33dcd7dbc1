"""A sweep's outputs in `<storage>/<sweep>/`: results.csv and results.json (one row per trial),
best_config.yaml (runs with `rayft train` as is), metric.png (the metric over training for every
trial, the best highlighted) and the table printed at the end."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rayft.config.load import LoadedConfig
from rayft.records.rundir import mark_stopped, read_summary, write_json_atomic
from rayft.tune.trial import SweepSpec, trial_config


@dataclass
class TrialRow:
    trial_id: str
    status: str  # completed | stopped | error | unfinished
    params: dict[str, Any]
    final_metric: float | None
    best_metric: float | None
    steps: int | None
    stopped_early: bool
    wall_s: float | None
    run_dir: str
    error: str | None = None
    history: list[tuple[int, float]] = field(default_factory=list)  # (global_step, metric)


@dataclass
class SweepResults:
    sweep_dir: Path
    metric: str
    mode: str
    trials: list[TrialRow]
    best: TrialRow | None
    files: dict[str, Path]


def collect(grid, loaded: LoadedConfig, spec: SweepSpec) -> SweepResults:
    tune = loaded.pipeline.tune
    stage = loaded.pipeline.stages[0].name
    # Tune's own view of each trial (TERMINATED also covers trials the scheduler stopped). ResultGrid
    # exposes only counts publicly, so read the trials it was built from.
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    by_id = {t.trial_id: t for t in trials}
    rows = [_row(result, tune.metric, tune.mode, spec, stage, by_id) for result in grid]
    rows.sort(key=lambda r: r.trial_id)
    best = pick_best(rows, tune.mode)
    for row in rows:  # a stopped trial's stage summary still says "running"
        if row.status == "stopped":
            mark_stopped(Path(row.run_dir) / stage, f"stopped early by the {tune.scheduler} scheduler at step {row.steps}")
    files = write_outputs(rows, best, loaded, spec)
    return SweepResults(spec.sweep_dir, tune.metric, tune.mode, rows, best, files)


def _row(result, metric: str, mode: str, spec: SweepSpec, stage: str, by_id: dict[str, Any]) -> TrialRow:
    path = Path(result.path)
    trial_id = path.name.removeprefix("trial_")
    frame = result.metrics_dataframe
    history: list[tuple[int, float]] = []
    wall = None
    if frame is not None and metric in frame and "global_step" in frame:
        seen: dict[int, float] = {}
        for step, value in zip(frame["global_step"], frame[metric]):
            if _finite(step) and _finite(value):
                seen[int(step)] = float(value)  # the final report repeats the last eval's step
        history = sorted(seen.items())
    history = sorted({**dict(history), **_schedule_history(path, metric)}.items())
    if frame is not None and "time_total_s" in frame and len(frame):
        wall = float(frame["time_total_s"].iloc[-1])
    summary = read_summary(path / stage) or {}
    completed = summary.get("status") == "completed"
    if result.error is not None:
        status = "error"
    elif completed:
        status = "completed"
    elif getattr(by_id.get(trial_id), "status", "TERMINATED") == "TERMINATED" and history:
        status = "stopped"  # ended by the scheduler before max_steps
    else:
        status = "unfinished"  # the sweep was interrupted; a resume runs it again
    values = [v for _, v in history]
    final = summary.get(metric) if completed and _finite(summary.get(metric)) else (values[-1] if values else None)
    best_value = (min(values) if mode == "min" else max(values)) if values else None
    config = result.config or getattr(by_id.get(trial_id), "config", None) or {}
    params = {k: config.get(k) for k in spec.space}
    steps = summary.get("global_step") if completed else (history[-1][0] if history else None)
    return TrialRow(trial_id, status, params, final, best_value, steps, status == "stopped", wall, str(path),
                    error=_error_text(result.error), history=history)


def _schedule_history(trial_dir: Path, metric: str) -> dict[int, float]:
    """{end step: metric} of a PBT trial's segments, from its own pbt_schedule.json. Ray's copy of
    the trial's reports (result.json) can lose one: when PBT restarts a trial from a checkpoint,
    Tune copies the file back from the storage path over the newer local one, and a report made
    since the last sync is gone."""
    path = trial_dir / "pbt_schedule.json"
    try:
        schedule = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        return {}
    found: dict[int, float] = {}
    for event in schedule if isinstance(schedule, list) else []:
        value = (event.get("metrics") or {}).get(metric) if isinstance(event, dict) else None
        if event.get("event") == "segment" and _finite(value):
            found[int(event["steps"][1])] = float(value)
    return found


def pick_best(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The best final metric among trials that ran to the end (else among all with a metric)."""
    pool = [r for r in rows if r.status == "completed" and r.final_metric is not None] or \
           [r for r in rows if r.final_metric is not None]
    if not pool:
        return None
    return (min if mode == "min" else max)(pool, key=lambda r: r.final_metric)


def write_outputs(rows: list[TrialRow], best: TrialRow | None, loaded: LoadedConfig, spec: SweepSpec) -> dict[str, Path]:
    tune = loaded.pipeline.tune
    out = spec.sweep_dir
    files = {"results.json": out / "results.json", "results.csv": out / "results.csv"}
    write_json_atomic(files["results.json"], {
        "sweep": out.name, "metric": tune.metric, "mode": tune.mode, "scheduler": tune.scheduler,
        "search_alg": tune.search_alg, "search_space": tune.search_space,
        "best_trial": best.trial_id if best else None,
        "trials": [{**asdict(r), "best": best is not None and r.trial_id == best.trial_id} for r in rows],
        "total_steps": sum(r.steps or 0 for r in rows),
    })
    with (out / ".results.csv.tmp").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial_id", "status", *spec.space, f"final_{tune.metric}", f"best_{tune.metric}",
                         "steps", "stopped_early", "wall_s", "best", "run_dir", "error"])
        for r in rows:
            writer.writerow([r.trial_id, r.status, *(_cell(r.params.get(k)) for k in spec.space), r.final_metric,
                             r.best_metric, r.steps, r.stopped_early, r.wall_s and round(r.wall_s, 2),
                             best is not None and r.trial_id == best.trial_id, r.run_dir, r.error or ""])
    (out / ".results.csv.tmp").replace(files["results.csv"])
    if best is not None:
        files["best_config.yaml"] = write_best_config(best, spec, tune.metric)
    plot = plot_trials(rows, best, tune.metric, out / "metric.png")
    if plot:
        files["metric.png"] = plot
    return files


def write_best_config(best: TrialRow, spec: SweepSpec, metric: str) -> Path:
    """The base config with the best trial's values; no tune section, ready for `rayft train`."""
    loaded = trial_config(spec, best.params, label="best_config")
    body = yaml.safe_dump(loaded.pipeline.model_dump(mode="json", exclude={"tune"}), sort_keys=False)
    header = (f"# Best trial {best.trial_id} of sweep '{spec.sweep_dir.name}' ({metric} {best.final_metric:.6g});\n"
              f"# searched values: {json.dumps(best.params)}\n"
              f"#   rayft train {spec.sweep_dir / 'best_config.yaml'}\n")
    if spec.scheduler == "pbt":
        stage = loaded.pipeline.stages[0].name
        header += (f"# pbt: this trial's values changed during training ({best.run_dir}/pbt_schedule.json); these are "
                   f"its final ones,\n# so a run of this file from scratch is not the PBT result. That result is "
                   f"the adapter {best.run_dir}/{stage}/adapter\n")
    path = spec.sweep_dir / "best_config.yaml"
    path.write_text(header + body)
    return path


def plot_trials(rows: list[TrialRow], best: TrialRow | None, metric: str, path: Path) -> Path | None:
    """The metric over optimizer steps for every trial; the best bold, stopped trials end with x."""
    if not any(r.history for r in rows):
        return None
    from rayft.core.plotting import finish, new_figure

    fig, ax = new_figure(7, 4)
    for r in rows:
        if not r.history:
            continue
        steps, values = [s for s, _ in r.history], [v for _, v in r.history]
        is_best = best is not None and r.trial_id == best.trial_id
        ax.plot(steps, values, "-o" if is_best else "-", color="C3" if is_best else "0.6",
                linewidth=2.5 if is_best else 1, markersize=4, zorder=3 if is_best else 2,
                label=f"best: {r.trial_id}" if is_best else None)
        if r.stopped_early:
            ax.plot(steps[-1:], values[-1:], "x", color="0.3", zorder=2)
    ax.plot([], [], "x", color="0.3", label="stopped early")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.set_title(f"{len(rows)} trials")
    ax.grid(alpha=0.3)
    ax.legend()
    finish(fig, path)
    return path


def report(results: SweepResults, started_at: float) -> None:
    """A table of the trials, best first, and where the outputs are."""
    from rich.console import Console
    from rich.table import Table

    sign = 1 if results.mode == "min" else -1
    order = sorted(results.trials, key=lambda r: (r.final_metric is None, sign * (r.final_metric or 0)))
    names = list(order[0].params) if order else []
    table = Table(title=f"sweep {results.sweep_dir.name}: {len(order)} trials, {results.metric} ({results.mode})")
    for col in ["trial", *names, f"final {results.metric}", "best", "steps", "status", "wall s"]:
        table.add_column(col, justify="left" if col in ("trial", "status") else "right")
    for r in order:
        mark = " *" if results.best is not None and r.trial_id == results.best.trial_id else ""
        table.add_row(r.trial_id + mark, *(_cell(r.params.get(k)) for k in names), _num(r.final_metric),
                      _num(r.best_metric), str(r.steps if r.steps is not None else "-"), r.status,
                      f"{r.wall_s:.0f}" if r.wall_s else "-")
    console = Console(width=160)
    console.print(table)
    stopped = sum(r.stopped_early for r in results.trials)
    print(f"rayft: {stopped} of {len(results.trials)} trials stopped early; {sum(r.steps or 0 for r in results.trials)} "
          f"training steps in all; {time.time() - started_at:.0f} s", flush=True)
    for name, path in results.files.items():
        print(f"rayft: {name}: {path}", flush=True)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _num(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
