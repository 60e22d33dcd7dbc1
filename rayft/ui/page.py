"""The web UI's page (Gradio Blocks): New run, Runs, Sweeps and Chat tabs. Every action calls
rayft.ui.backend (which calls the library the CLI uses); nothing here trains, serves or validates on
its own. A failing action is a message in the page, never a stack trace (the trace goes to the log).
"""

from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from rayft.errors import UserError
from rayft.runs import RunState, curves, list_sweeps
from rayft.ui.backend import Backend
from rayft.ui.config_form import DEMO_DATASET, Form, check_config, form_to_config, to_yaml

log = logging.getLogger("rayft.ui")
REFRESH_S = 2.0
RUN_COLUMNS = ["run", "status", "stage", "step", "loss", "eval_loss", "updated"]
CURVE_GROUPS = {"loss": ("train/loss", "eval/loss"), "learning rate": ("train/learning_rate",),
                "reward": ("train/rewards/margins", "train/rewards/accuracies", "eval/rewards/margins",
                           "train/reward", "train/objective/scores", "eval/accuracy")}

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def _message(exc: Exception) -> str:
    if isinstance(exc, UserError):
        return f"**Error:** {exc}"
    log.error("rayft ui: unexpected error\n%s", traceback.format_exc())
    return f"**Error:** {type(exc).__name__}: {exc} (details in the `rayft ui` log)"


def _fmt(value: Any) -> str:
    return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def runs_table(runs: list[RunState]) -> pd.DataFrame:
    rows = []
    for run in runs:
        stage = run.current
        steps = f"{stage.step or 0}/{stage.max_steps or '?'}" if stage and stage.step is not None else ""
        rows.append([run.name, run.status, f"{stage.name} ({stage.type})" if stage else "", steps,
                     _fmt(stage.loss if stage else None), _fmt(stage.eval_loss if stage else None),
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
    frame = pd.DataFrame(rows, columns=["step", "value", "series"])
    parts = [f"{tag}: {len(found[tag])} points, last {found[tag][-1][1]:.4g} at step {found[tag][-1][0]}"
             for tag in wanted if tag in found]
    return frame, "; ".join(parts)


def figure(frame: pd.DataFrame, color: str, ylabel: str):
    """A matplotlib figure of `frame` (step, value, one line per `color` value), markers on every point."""
    from rayft.figures import finish, new_figure

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


def build_page(backend: Backend) -> gr.Blocks:
    from rayft.models.builtin import BUILTINS
    from rayft.stages import BUILTIN_ORDER

    formats = ["auto", "instruction", "qa", "chat", "sharegpt", "text", "prompt_completion", "preference",
               "preference_implicit"]
    with gr.Blocks(title="rayft", analytics_enabled=False) as page:
        gr.Markdown(f"# rayft\nRuns under `{backend.storage}` · data from "
                    f"{', '.join(f'`{d}`' for d in backend.data_dirs) or 'uploads only'}")
        with gr.Tabs() as tabs:
            # ---- New run -------------------------------------------------------------------------
            with gr.Tab("New run", id="new"):
                with gr.Row():
                    model = gr.Dropdown([f"builtin:{n}" for n in BUILTINS], value=Form.model, label="Model",
                                        allow_custom_value=True, info="a builtin, or a local model folder",
                                        elem_id="field-model")
                    dataset = gr.Dropdown([DEMO_DATASET, *backend.data_files()], value=DEMO_DATASET,
                                          label="Dataset", allow_custom_value=True, elem_id="dataset")
                    upload = gr.File(label="…or upload a data file (.jsonl/.json/.csv/.parquet)",
                                     file_types=[".jsonl", ".json", ".csv", ".parquet"], elem_id="upload")
                with gr.Row():
                    data_format = gr.Dropdown(formats, value="auto", label="Format")
                    template = gr.Dropdown(["auto", "alpaca", "qa", "chat", "none"], value=Form.template,
                                           label="Template", info="chat: as the Chat tab asks the served model")
                    stages = gr.CheckboxGroup(list(BUILTIN_ORDER), value=["sft"], label="Stages (in order)")
                with gr.Row():
                    adapter = gr.Radio(["lora", "qlora", "full"], value="lora", label="Adapter")
                    r = gr.Textbox(str(Form.r), label="LoRA r", elem_id="field-r")
                    alpha = gr.Textbox(str(Form.alpha), label="LoRA alpha")
                    lr = gr.Textbox(Form.lr, label="Learning rate", elem_id="field-lr")
                    max_steps = gr.Textbox(str(Form.max_steps), label="Max steps", elem_id="field-max-steps")
                with gr.Row():
                    batch_size = gr.Textbox(str(Form.batch_size), label="Batch size per worker")
                    eval_steps = gr.Textbox(str(Form.eval_steps), label="Eval every (steps)",
                                            elem_id="field-eval-steps")
                    max_length = gr.Textbox(str(Form.max_length), label="Max length (tokens)",
                                            elem_id="field-max-length")
                    workers = gr.Textbox(str(Form.num_workers), label="Ray Train workers")
                    evaluate = gr.Checkbox(True, label="Evaluate base vs tuned at the end", elem_id="field-eval")
                fields = [model, dataset, data_format, template, stages, adapter, r, alpha, lr, max_steps,
                          batch_size, eval_steps, max_length, workers, evaluate]
                yaml_box = gr.Code(to_yaml(form_to_config(Form())), language="yaml", label="Config (YAML; edit "
                                   "freely, it is what runs)", interactive=True, elem_id="config-yaml")
                check = gr.Markdown(elem_id="config-status")
                with gr.Row():
                    run_name = gr.Textbox(_new_name(), label="Run name", elem_id="run-name")
                    start = gr.Button("Start run", variant="primary", elem_id="start-run")
                started = gr.Markdown(elem_id="start-status")

            # ---- Runs ----------------------------------------------------------------------------
            with gr.Tab("Runs", id="runs"):
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

            # ---- Sweeps --------------------------------------------------------------------------
            with gr.Tab("Sweeps", id="sweeps") as sweeps_tab:
                sweep_pick = gr.Dropdown([s.name for s in list_sweeps(backend.storage)], label="Sweep",
                                         allow_custom_value=True,
                                         elem_id="sweep-select")
                trials = gr.Dataframe(label="Trials (★ best)", interactive=False, elem_id="trials-table")
                trial_plot = gr.Plot(label="Metric per trial", elem_id="trial-curve", format="png")
                best_info = gr.Markdown(elem_id="best-info")
                best_run = gr.Button("Train with the best config", elem_id="train-best")

            # ---- Chat ----------------------------------------------------------------------------
            with gr.Tab("Chat", id="chat"):
                with gr.Row():
                    serve_info = gr.Markdown(elem_id="serve-status")
                    serve_start = gr.Button("Start Serve", elem_id="start-serve")
                    refresh_models = gr.Button("Refresh models", elem_id="refresh-models")
                with gr.Row():
                    model_a = gr.Dropdown([], label="Model A", elem_id="model-a", allow_custom_value=True)
                    model_b = gr.Dropdown([], label="Model B (optional, side by side)", elem_id="model-b",
                                          allow_custom_value=True)
                    max_new = gr.Slider(8, 256, value=48, step=8, label="Max new tokens")
                with gr.Row():
                    chat_a = gr.Chatbot(label="Model A", elem_id="chat-a", height=320)
                    chat_b = gr.Chatbot(label="Model B", elem_id="chat-b", height=320)
                with gr.Row():
                    prompt = gr.Textbox(label="Message", scale=4, elem_id="chat-prompt")
                    send = gr.Button("Send", variant="primary", elem_id="chat-send")
                chat_error = gr.Markdown(elem_id="chat-status")

        # ---- New run: form -> YAML -> check -> start ---------------------------------------------
        def render(*values):
            text = to_yaml(form_to_config(Form(*values)))
            return text, _check(text)

        def _check(text: str) -> str:
            try:
                _, problem = check_config(text, backend.allowed_data, backend.storage)
            except Exception as exc:  # noqa: BLE001 - the page shows it
                return _message(exc)
            return f"**Error:** {problem}" if problem else "✓ valid config"

        for box in fields:
            box.change(render, fields, [yaml_box, check])
        yaml_box.change(_check, yaml_box, check)
        page.load(_check, yaml_box, check)

        def on_upload(file):
            if file is None:
                return gr.update(), ""
            try:
                saved = backend.save_upload(file if isinstance(file, str) else file.name,
                                            Path(file if isinstance(file, str) else file.name).name)
            except Exception as exc:  # noqa: BLE001
                return gr.update(), _message(exc)
            return gr.update(choices=[DEMO_DATASET, *backend.data_files()], value=str(saved)), \
                f"uploaded to `{saved}`"

        upload.upload(on_upload, upload, [dataset, check])

        def on_start(text: str, name: str):
            try:
                job_id, run_dir = backend.start_run(text, name.strip())
            except Exception as exc:  # noqa: BLE001
                return _message(exc), gr.update(), gr.update(), gr.update()
            names = [r.name for r in backend.runs()]
            return (f"Started **{run_dir.name}** as Ray job `{job_id}`; run directory `{run_dir}`",
                    gr.update(choices=names, value=run_dir.name), _new_name(), gr.Tabs(selected="runs"))

        start.click(on_start, [yaml_box, run_name], [started, run_pick, run_name, tabs])

        # ---- Runs: table, live curves, stop, register ------------------------------------------
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
                    curve, points = curve_frame(run.path / stage.name, which) if stage else (empty_curve(), "")
                    report_text = run.report.read_text()[:20000] if run.report else ""
                    values = [frame, names, info, curve, points, report_text]
            except Exception as exc:  # noqa: BLE001
                return gr.skip(), gr.skip(), _message(exc), gr.skip(), "", gr.skip(), shown
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
                return _message(exc)

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
                return _message(exc)

        register.click(on_register, [run_pick, adapter_id], run_action)

        # ---- Sweeps -----------------------------------------------------------------------------
        def show_sweep(name: str | None):
            try:
                if not name:
                    return None, None, ""
                sweep = backend.sweep(name)
                params = sorted({k for t in sweep.trials for k in (t.get("params") or {})})
                rows = [["★" if t.get("trial_id") == sweep.best_trial else "", t.get("trial_id"), t.get("status"),
                         *[_fmt((t.get("params") or {}).get(k)) for k in params], _fmt(t.get("final_metric")),
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
                return None, None, _message(exc)

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
                job_id, run_dir = backend.start_run(sweep.best_config.read_text(), f"{name}-best-{_stamp()}")
                return f"Started **{run_dir.name}** (job `{job_id}`) with the best config", gr.Tabs(selected="runs")
            except Exception as exc:  # noqa: BLE001
                return _message(exc), gr.update()

        best_run.click(train_best, sweep_pick, [best_info, tabs])

        # ---- Chat -------------------------------------------------------------------------------
        def serve_status():
            if backend.serve_up():
                models = backend.models()
                return (f"Serve is up at {backend.serve_url}: {len(models)} model(s)",
                        gr.update(choices=models, value=models[0] if models else None),
                        gr.update(choices=["", *models]))
            return (f"No Serve app at {backend.serve_url}; start one (base `{backend.serve_model}` plus the "
                    f"adapters registered from the Runs tab)", gr.update(), gr.update())

        def on_serve_start():
            try:
                backend.start_serve()
            except Exception as exc:  # noqa: BLE001
                return _message(exc), gr.update(), gr.update()
            return serve_status()

        serve_start.click(on_serve_start, None, [serve_info, model_a, model_b])
        refresh_models.click(serve_status, None, [serve_info, model_a, model_b])
        page.load(serve_status, None, [serve_info, model_a, model_b])

        def on_send(message: str, a: str | None, b: str | None, history_a, history_b, tokens: float):
            """Stream model A's answer, then model B's, into their chat panes; the status line says
            when both are complete."""
            message = (message or "").strip()
            if not message or not a:
                yield history_a, history_b, "**Error:** pick model A and type a message", gr.skip()
                return
            history_a = [*(history_a or []), {"role": "user", "content": message}]
            history_b = [*(history_b or []), {"role": "user", "content": message}] if b else history_b
            problems = []
            for which, model_id in (("A", a), ("B", b)):
                if not model_id:
                    continue
                history = history_a if which == "A" else history_b
                asked = [{"role": m["role"], "content": _text(m["content"])} for m in history]
                history.append({"role": "assistant", "content": ""})
                try:
                    for text in backend.chat(model_id, asked, int(tokens)):
                        history[-1]["content"] = text
                        yield history_a, history_b, f"{model_id} is answering…", ""
                except Exception as exc:  # noqa: BLE001 - e.g. the app answered 4xx for a bad model id
                    history[-1]["content"] = f"(error: {getattr(exc, 'message', None) or exc})"
                    problems.append(f"model {which} ({model_id}): {_message(exc)}")
            yield history_a, history_b, "; ".join(problems) or "answers complete", ""

        send.click(on_send, [prompt, model_a, model_b, chat_a, chat_b, max_new], [chat_a, chat_b, chat_error, prompt])
        prompt.submit(on_send, [prompt, model_a, model_b, chat_a, chat_b, max_new],
                      [chat_a, chat_b, chat_error, prompt])
    return page


def _text(content: Any) -> str:
    """Gradio 6 may hand chat content back as a list of parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _new_name() -> str:
    return f"ui-{_stamp()}"
