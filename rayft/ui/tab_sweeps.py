"""The web UI's Sweeps tab: a sweep's trials (the best starred), their metric per step, and
training with the best trial's config."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from rayft.core.errors import UserError
from rayft.records.listing import list_sweeps
from rayft.ui.backend import Backend
from rayft.ui.widgets import empty_curve, error_text, figure, fmt, stamp


def build(backend: Backend, page: gr.Blocks, tabs: gr.Tabs, sweeps_tab: gr.Tab) -> None:
    """The tab's components and events (inside its `gr.Tab`)."""
    sweep_pick = gr.Dropdown([s.name for s in list_sweeps(backend.storage)], label="Sweep",
                             allow_custom_value=True,
                             elem_id="sweep-select")
    trials = gr.Dataframe(label="Trials (★ best)", interactive=False, elem_id="trials-table")
    trial_plot = gr.Plot(label="Metric per trial", elem_id="trial-curve", format="png")
    best_info = gr.Markdown(elem_id="best-info")
    best_run = gr.Button("Train with the best config", elem_id="train-best")

    def show_sweep(name: str | None):
        try:
            if not name:
                return None, None, ""
            sweep = backend.sweep(name)
            params = sorted({k for t in sweep.trials for k in (t.get("params") or {})})
            rows = [["★" if t.get("trial_id") == sweep.best_trial else "", t.get("trial_id"), t.get("status"),
                     *[fmt((t.get("params") or {}).get(k)) for k in params], fmt(t.get("final_metric")),
                     t.get("steps")] for t in sweep.trials]
            frame = pd.DataFrame(rows, columns=["best", "trial", "status", *params,
                                                f"final {sweep.metric or 'metric'}", "steps"])
            points = [(s, v, t.get("trial_id")) for t in sweep.trials for s, v in t.get("history") or []]
            lines = (pd.DataFrame(points, columns=["step", "value", "trial"]).astype(
                {"step": "int64", "value": "float64", "trial": "object"}) if points else empty_curve("trial"))
            best = (f"Best trial **{sweep.best_trial}** ({sweep.metric} {sweep.mode}); config "
                    f"`{sweep.best_config}`" if sweep.best_config else
                    ("sweep still running: results appear when it ends" if not sweep.finished else "no best trial"))
            return frame, figure(lines, "trial", sweep.metric or "metric"), best
        except Exception as exc:  # noqa: BLE001
            return None, None, error_text(exc)

    sweep_pick.change(show_sweep, sweep_pick, [trials, trial_plot, best_info])
    page.load(show_sweep, sweep_pick, [trials, trial_plot, best_info])  # the dropdown starts on the newest
    sweeps_tab.select(lambda: gr.update(choices=[s.name for s in list_sweeps(backend.storage)]), None, sweep_pick)

    def train_best(name: str | None):
        try:
            if not name:
                raise UserError("pick a sweep first")
            sweep = backend.sweep(name)
            if not sweep.best_config:
                raise UserError(f"{name}: no best_config.yaml yet (the sweep has not finished)")
            job_id, run_dir = backend.start_run(sweep.best_config.readtext_of(), f"{name}-best-{stamp()}")
            return f"Started **{run_dir.name}** (job `{job_id}`) with the best config", gr.Tabs(selected="runs")
        except Exception as exc:  # noqa: BLE001
            return error_text(exc), gr.update()

    best_run.click(train_best, sweep_pick, [best_info, tabs])
