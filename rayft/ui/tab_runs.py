"""The web UI's Runs tab: the runs table, the picked run's live curves, report and job log, and
stopping a run or registering its adapter for serving."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from rayft.core.errors import UserError
from rayft.ui.backend import Backend
from rayft.ui.widgets import CURVE_GROUPS, REFRESH_S, curve_frame, empty_curve, error_text, figure, runs_table


def build(backend: Backend) -> gr.Dropdown:
    """The tab's components and events (inside its `gr.Tab`); returns the run picker, which the New
    run tab moves to a run it started."""
    table = gr.Dataframe(runs_table(backend.runs()), label="Runs", interactive=False, elem_id="runs-table")
    with gr.Row():
        run_pick = gr.Dropdown([r.name for r in backend.runs()], label="Run", elem_id="run-select",
                               allow_custom_value=True)
        group = gr.Radio(list(CURVE_GROUPS), value="loss", label="Curve")
        stop = gr.Button("Stop run", variant="stop", elem_id="stop-run")
    run_info = gr.Markdown(elem_id="run-info")
    run_action = gr.Markdown(elem_id="run-action")
    plot = gr.Plot(label="Curve", elem_id="run-curve", format="png")
    curve_info = gr.Markdown(elem_id="curve-info")
    with gr.Row():
        adapter_id = gr.Textbox(label="Serve this run's adapter as (model id)", elem_id="adapter-id")
        register = gr.Button("Register in the adapter store", elem_id="register")
    with gr.Accordion("Job log (last 40 lines)", open=False):
        logs = gr.Textbox(lines=12, max_lines=12, label="", elem_id="job-log")
    report = gr.Markdown(elem_id="run-report")

    def refresh(name: str | None, which: str, shown: dict | None):
        """The runs table and the picked run's details; an output that has not changed since the
        last tick is skipped, so the page does not redraw (and the plot does not flicker)."""
        try:
            runs = backend.runs()  # one listing (and one Jobs API call) per tick, for table and run
            frame = runs_table(runs)
            names = frame["run"].tolist()
            if not name:
                values = [frame, names, "", empty_curve(), "pick a run", ""]
            else:
                run = next((r for r in runs if r.name == name and r.stages), None) or backend.run(name)
                stage = run.current
                info = f"**{run.name}** · {run.status} · `{run.path}`"
                if stage and stage.error:
                    info += f"\n\n**{stage.name}:** {stage.error.splitlines()[0]}"
                info += data_counts(run)
                curve, points = curve_frame(run.path / stage.name, which) if stage else (empty_curve(), "")
                report_text = run.report.readtext_of()[:20000] if run.report else ""
                values = [frame, names, info, curve, points, report_text]
        except Exception as exc:  # noqa: BLE001
            return gr.skip(), gr.skip(), error_text(exc), gr.skip(), "", gr.skip(), shown
        shown = dict(shown or {})
        out = []
        for i, value in enumerate(values):
            key = value.to_csv() if isinstance(value, pd.DataFrame) else repr(value)
            if shown.get(i) == key:
                out.append(gr.skip())
                continue
            shown[i] = key
            if i == 1:
                value = gr.update(choices=value)
            elif i == 3:
                value = figure(value, "series", which)
            out.append(value)
        return (*out, shown)

    shown = gr.State({})
    outputs = [table, run_pick, run_info, plot, curve_info, report, shown]
    timer = gr.Timer(REFRESH_S)
    timer.tick(refresh, [run_pick, group, shown], outputs, show_progress="hidden")
    run_pick.change(refresh, [run_pick, group, gr.State({})], outputs)
    group.change(refresh, [run_pick, group, gr.State({})], outputs)

    def pick_row(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.update()

    table.select(pick_row, None, run_pick)

    def on_stop(name: str | None):
        try:
            return backend.stop_run(name or "")
        except Exception as exc:  # noqa: BLE001
            return error_text(exc)

    stop.click(on_stop, run_pick, run_action)

    def on_logs(name: str | None):
        try:
            return backend.job_logs(name) if name else ""
        except Exception as exc:  # noqa: BLE001
            return str(exc)

    run_pick.change(on_logs, run_pick, logs)

    def on_register(name: str | None, adapter_name: str):
        try:
            if not name:
                raise UserError("pick a run first")
            return backend.register(name, adapter_name.strip())
        except Exception as exc:  # noqa: BLE001
            return error_text(exc)

    register.click(on_register, [run_pick, adapter_id], run_action)
    return run_pick


def data_counts(run) -> str:
    """Each started stage's data counts as `rayft data inspect` prints them: every row read in one
    line (bad, filtered, duplicate, held out, trained on, dropped)."""
    from rayft.data.accounting import one_line
    from rayft.records.rundir import read_summary

    lines = []
    for stage in run.stages:
        counts = ((read_summary(run.path / stage.name) or {}).get("data") or {}).get("accounting")
        if counts:
            try:
                lines.append(f"- data of **{stage.name}**: {one_line(counts)}")
            except KeyError:  # a summary written by an older rayft
                continue
    return ("\n\n" + "\n".join(lines)) if lines else ""
