"""The web UI's Chat tab: start a Serve app, then chat with one model, or two side by side, through
its OpenAI-compatible API."""

from __future__ import annotations

import gradio as gr

from rayft.ui.backend import Backend
from rayft.ui.widgets import error_text, text_of


def build(backend: Backend, page: gr.Blocks) -> None:
    """The tab's components and events (inside its `gr.Tab`)."""
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
            return error_text(exc), gr.update(), gr.update()
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
            asked = [{"role": m["role"], "content": text_of(m["content"])} for m in history]
            history.append({"role": "assistant", "content": ""})
            try:
                for text in backend.chat(model_id, asked, int(tokens)):
                    history[-1]["content"] = text
                    yield history_a, history_b, f"{model_id} is answering…", ""
            except Exception as exc:  # noqa: BLE001 - e.g. the app answered 4xx for a bad model id
                history[-1]["content"] = f"(error: {getattr(exc, 'message', None) or exc})"
                problems.append(f"model {which} ({model_id}): {error_text(exc)}")
        yield history_a, history_b, "; ".join(problems) or "answers complete", ""

    send.click(on_send, [prompt, model_a, model_b, chat_a, chat_b, max_new], [chat_a, chat_b, chat_error, prompt])
    prompt.submit(on_send, [prompt, model_a, model_b, chat_a, chat_b, max_new],
                  [chat_a, chat_b, chat_error, prompt])
