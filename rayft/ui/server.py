"""`rayft ui`: check the options, connect to Ray, build the page and serve it.

Safe by default: it binds 127.0.0.1; any other host needs a token (`--token-file` or $RAYFT_UI_TOKEN),
asked for on a login page (user name `rayft`). Data is read only from `--data-dir` folders, the
uploads folder and the builtin demo dataset; runs are written only under `--storage`.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
from pathlib import Path

from rayft.core.errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_FILE_SIZE = "50mb"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; another needs a token)")
    p.add_argument("--port", type=int, default=7860, help="HTTP port (default 7860)")
    p.add_argument("--address", help="Ray cluster to join (default: start a local Ray with its dashboard)")
    p.add_argument("--storage", default="runs", help="where runs are listed and written (default ./runs)")
    p.add_argument("--data-dir", action="append", default=[], metavar="DIR",
                   help="a folder the page may read data files from (repeatable; uploads are always allowed)")
    p.add_argument("--serve-url", default="http://127.0.0.1:8000",
                   help="the Serve app the Chat tab talks to (started from the page if none answers)")
    p.add_argument("--serve-model", default="builtin:smollm2-135m-instruct",
                   help="base model of a Serve app started from the page")
    p.add_argument("--token-file", help="file holding the page's token (else $RAYFT_UI_TOKEN)")


def ui_main(args: argparse.Namespace) -> int:
    import gradio as gr

    from rayft.ui.backend import Backend
    from rayft.ui.page import build_page

    token = _token(args.token_file)
    if not _loopback(args.host) and not token:
        raise UserError(f"--host {args.host}: the page starts jobs on your cluster; binding anything but "
                        "127.0.0.1 needs a token (--token-file or RAYFT_UI_TOKEN)")
    for folder in args.data_dir:
        if not Path(folder).expanduser().is_dir():
            raise UserError(f"--data-dir {folder}: not a folder")
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: expected 1-65535")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    backend = Backend(Path(args.storage), [Path(d) for d in args.data_dir], address=args.address,
                      serve_url=args.serve_url.rstrip("/"), serve_model=args.serve_model,
                      api_key=os.environ.get("RAYFT_API_KEY"))
    backend.connect()
    page = build_page(backend)
    # System fonts: the default theme would fetch Google Fonts, which an offline machine cannot reach.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    print(f"rayft ui: http://{args.host}:{args.port}  (runs under {backend.storage})", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the page, Serve and the local Ray cleanly
    try:
        page.queue(default_concurrency_limit=8).launch(
            server_name=args.host, server_port=args.port, auth=[("rayft", token)] if token else None,
            max_file_size=MAX_FILE_SIZE, ssr_mode=False, show_error=False, quiet=True, theme=theme,
            allowed_paths=[], footer_links=[])
    except KeyboardInterrupt:
        pass
    finally:
        backend.close()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _token(token_file: str | None) -> str | None:
    if token_file:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as exc:
            raise UserError(f"--token-file {token_file}: {exc.strerror}") from None
        if not token:
            raise UserError(f"--token-file {token_file}: empty")
        return token
    return os.environ.get("RAYFT_UI_TOKEN", "").strip() or None


def _loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
