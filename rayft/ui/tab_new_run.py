"""The web UI's New run tab: a form that writes the config YAML, the YAML itself (editable, checked
as it changes), uploads, and the button that starts the run as a Ray job."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from rayft.ui.backend import Backend
from rayft.ui.config_form import DEMO_DATASET, Form, check_config, form_to_config, to_yaml
from rayft.ui.widgets import error_text, new_name

FORMATS = ["auto", "instruction", "qa", "chat", "sharegpt", "text", "prompt_completion", "preference",
           "preference_implicit"]


def build(backend: Backend, page: gr.Blocks) -> SimpleNamespace:
    """The tab's components and their events (inside its `gr.Tab`); `wire_start` adds the start
    button's, once the Runs tab, which shows a started run, exists."""
    from rayft.models.builtin import BUILTINS
    from rayft.stages import BUILTIN_ORDER

    with gr.Row():
        model = gr.Dropdown([f"builtin:{n}" for n in BUILTINS], value=Form.model, label="Model",
                            allow_custom_value=True, info="a builtin, or a local model folder",
                            elem_id="field-model")
        dataset = gr.Dropdown([DEMO_DATASET, *backend.data_files()], value=DEMO_DATASET,
                              label="Dataset", allow_custom_value=True, elem_id="dataset")
        upload = gr.File(label="…or upload a data file (.jsonl/.json/.csv/.parquet)",
                         file_types=[".jsonl", ".json", ".csv", ".parquet"], elem_id="upload")
    with gr.Row():
        data_format = gr.Dropdown(FORMATS, value="auto", label="Format")
        template = gr.Dropdown(["auto", "alpaca", "qa", "chat", "chatml", "none"], value=Form.template,
                               label="Template", info="chat: as the Chat tab asks the served model")
        stages = gr.CheckboxGroup(list(BUILTIN_ORDER), value=["sft"], label="Stages (in order)")
    with gr.Row():
        adapter = gr.Radio(["lora", "qlora", "ia3", "full"], value="lora", label="Adapter",
                           info="ia3: learned scaling vectors, far fewer weights than LoRA (r, alpha unused)")
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
        run_name = gr.Textbox(new_name(), label="Run name", elem_id="run-name")
        start = gr.Button("Start run", variant="primary", elem_id="start-run")
    started = gr.Markdown(elem_id="start-status")

    def render(*values):
        text = to_yaml(form_to_config(Form(*values)))
        return text, _check(text)

    def _check(text: str) -> str:
        try:
            loaded, problem = check_config(text, backend.allowed_data, backend.storage)
            if problem:
                return f"**Error:** {problem}"
            return "✓ valid config\n\n" + backend.memory_text(loaded)
        except Exception as exc:  # noqa: BLE001 - the page shows it
            return error_text(exc)

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
            return gr.update(), error_text(exc)
        return gr.update(choices=[DEMO_DATASET, *backend.data_files()], value=str(saved)), \
            f"uploaded to `{saved}`"

    upload.upload(on_upload, upload, [dataset, check])
    return SimpleNamespace(yaml_box=yaml_box, run_name=run_name, start=start, started=started)


def wire_start(ui: SimpleNamespace, backend: Backend, run_pick: gr.Dropdown, tabs: gr.Tabs) -> None:
    def on_start(text: str, name: str):
        try:
            job_id, run_dir = backend.start_run(text, name.strip())
        except Exception as exc:  # noqa: BLE001
            return error_text(exc), gr.update(), gr.update(), gr.update()
        names = [r.name for r in backend.runs()]
        return (f"Started **{run_dir.name}** as Ray job `{job_id}`; run directory `{run_dir}`",
                gr.update(choices=names, value=run_dir.name), new_name(), gr.Tabs(selected="runs"))

    ui.start.click(on_start, [ui.yaml_box, ui.run_name], [ui.started, run_pick, ui.run_name, tabs])
