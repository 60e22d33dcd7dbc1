"""Helpers of tests/test_arena.py: programmatic judges (importable as `arena_helpers:<name>`) and a
small OpenAI-compatible HTTP server on 127.0.0.1 whose answers are known."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AGREE, REFUSE = "YES!", "NO!"


def agreeing_wins(question: str, first: str, second: str) -> float:
    """An answer saying YES! beats one that does not; one saying NO! loses to one that does not. The
    tiny random model says neither, so the ranking of the arena's models is known."""
    def points(answer: str) -> int:
        return (AGREE in answer) - (REFUSE in answer)

    return points(first) - points(second)


def always_first(question: str, first: str, second: str) -> str:
    """Position bias in its purest form: in both orders it picks the first, so every pair is a tie."""
    return "first"


class KnownAnswers(BaseHTTPRequestHandler):
    """/v1/completions: model `agree` answers YES!, `refuse` NO!. /v1/chat/completions: a
    judge that always says [[A]]. Requests are recorded on the server."""

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.requests.append((self.path, body))
        if self.path == "/v1/completions":
            text = {"agree": AGREE, "refuse": REFUSE}.get(body.get("model"), "?")
            reply = {"id": "c", "object": "text_completion", "created": 0, "model": body.get("model"),
                     "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]}
        elif self.path == "/v1/chat/completions":
            reply = {"id": "j", "object": "chat.completion", "created": 0, "model": body.get("model"),
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "Both are fine. [[A]]"}}]}
        else:
            self.send_error(404)
            return
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def start_server() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KnownAnswers)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
