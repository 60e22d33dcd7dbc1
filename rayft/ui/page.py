"""The web UI's page (Gradio Blocks): New run, Runs, Sweeps and Chat tabs, one module each
(rayft/ui/tab_*.py). Every action calls rayft.ui.backend (which calls the library the CLI uses);
nothing here trains, serves or validates on its own. A failing action is a message in the page,
never a stack trace (the trace goes to the log).
"""

from __future__ import annotations

import gradio as gr

from rayft.ui import tab_chat, tab_new_run, tab_runs, tab_sweeps
from rayft.ui.backend import Backend


def build_page(backend: Backend) -> gr.Blocks:
    with gr.Blocks(title="rayft", analytics_enabled=False) as page:
        gr.Markdown(f"# rayft\nRuns under `{backend.storage}` · data from "
                    f"{', '.join(f'`{d}`' for d in backend.data_dirs) or 'uploads only'}")
        with gr.Tabs() as tabs:
            with gr.Tab("New run", id="new"):
                new_run = tab_new_run.build(backend, page)
            with gr.Tab("Runs", id="runs"):
                run_pick = tab_runs.build(backend)
            with gr.Tab("Sweeps", id="sweeps") as sweeps_tab:
                tab_sweeps.build(backend, page, tabs, sweeps_tab)
            with gr.Tab("Chat", id="chat"):
                tab_chat.build(backend, page)
        tab_new_run.wire_start(new_run, backend, run_pick, tabs)
    return page
