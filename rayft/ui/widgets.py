"""What the web UI's tabs share: error messages for the page, number formatting, the runs table,
curve frames and their figures, names for new runs."""

from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from rayft.core.errors import UserError
from rayft.records.listing import RunState, curves

log = logging.getLogger("rayft.ui")
REFRESH_S = 2.0
RUN_COLUMNS = ["run", "status", "stage", "step", "loss", "eval_loss", "updated"]
CURVE_GROUPS = {"loss": ("train/loss", "eval/loss"), "learning rate": ("train/learning_rate",),
                "reward": ("train/rewards/margins", "train/rewards/accuracies", "eval/rewards/margins",
                           "train/reward", "train/objective/scores", "eval/accuracy")}

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def error_text(exc: Exception) -> str:
    """A failed action as the page shows it: a UserError as it is, anything else with its type (and
    its trace in the log)."""
    if isinstance(exc, UserError):
        return f"**Error:** {exc}"
    log.error("rayft ui: unexpected error\n%s", traceback.format_exc())
    return f"**Error:** {type(exc).__name__}: {exc} (details in the `rayft ui` log)"


def fmt(value: Any) -> str:
    return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def runs_table(runs: list[RunState]) -> pd.DataFrame:
    rows = []
    for run in runs:
        stage = run.current
        steps = f"{stage.step or 0}/{stage.max_steps or '?'}" if stage and stage.step is not None else ""
        rows.append([run.name, run.status, f"{stage.name} ({stage.type})" if stage else "", steps,
                     fmt(stage.loss if stage else None), fmt(stage.eval_loss if stage else None),
                     datetime.fromtimestamp(run.updated).strftime("%H:%M:%S") if run.updated else ""])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def empty_curve(color: str = "series") -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                         color: pd.Series(dtype="object")})


def curve_frame(stage_dir: Path, group: str) -> tuple[pd.DataFrame, str]:
    """The stage's curves of one group (loss, learning rate, reward) and a line saying how many points."""
    found = curves(stage_dir)
    wanted = CURVE_GROUPS.get(group, ())
    rows = [(step, value, tag) for tag in wanted for step, value in found.get(tag, [])]
    if not rows:
        return empty_curve(), f"{group}: no points yet"
    parts = [f"{tag}: {len(found[tag])} points, last {found[tag][-1][1]:.4g} at step {found[tag][-1][0]}"
             for tag in wanted if tag in found]
    best = best_point(stage_dir)
    if best is not None and best[2] in wanted:  # training.best / early_stopping: the best evaluation, marked
        step, value, tag = best
        rows.append((step, value, f"best {tag} (step {step})"))
        parts.append(f"best {tag} {value:.4g} at step {step}")
    return pd.DataFrame(rows, columns=["step", "value", "series"]), "; ".join(parts)


def best_point(stage_dir: Path) -> tuple[int, float, str] | None:
    """(step, value, curve tag) of the stage's best evaluation so far, from <stage>/best.json."""
    from rayft.records.best import read_best

    record = read_best(stage_dir)
    step = (record or {}).get("best_step")
    if step is None:
        return None
    metric = record["metric"]
    value = record["history"][str(step)][metric]
    return int(step), float(value), "eval/" + metric.removeprefix("eval_")


def figure(frame: pd.DataFrame, color: str, ylabel: str):
    """A matplotlib figure of `frame` (step, value, one line per `color` value), markers on every point."""
    from rayft.core.plotting import finish, new_figure

    fig, ax = new_figure(10, 3.2)
    for i, (name, part) in enumerate(frame.groupby(color, sort=False)):
        ax.plot(part["step"], part["value"], marker="o", markersize=3, label=str(name), color=PALETTE[i % len(PALETTE)])
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(frame):
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no points yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    return finish(fig)


def text_of(content: Any) -> str:
    """Gradio 6 may hand chat content back as a list of parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def new_name() -> str:
    return f"ui-{stamp()}"
