"""Hand-written hostile requests for the serving fuzz test (tests/test_serve_fuzz.py): deep nesting,
many values, huge numbers, NaN, duplicate keys, mixed encodings, odd headers, path-traversal model
names. Each case is (name, method, path, body bytes, extra headers, expected status, expected
`error.code` or None). Model names: `tiny` (the base), `alpha` (the one adapter in the store),
`decoy` (an adapter folder beside the store), `evil` (a link in the store pointing at the decoy)."""

from __future__ import annotations

import gzip
import json

CHAT = "/v1/chat/completions"
COMPL = "/v1/completions"
MSGS = [{"role": "user", "content": "hi"}]


def chat(model: str = "tiny", **fields) -> bytes:
    return json.dumps({"model": model, "messages": MSGS, "max_tokens": 2, **fields}).encode()


def raw_chat(fields: str) -> bytes:
    """A chat body with `fields` spliced in as raw JSON text (for what json.dumps cannot write)."""
    return b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, ' + \
        fields.encode() + b"}"


DEEP = b"[" * 100_000 + b"]" * 100_000  # the repro: 100,000 nested brackets
ORDERS = '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'

CASES = [
    # --- size and shape, before parsing
    ("deep nesting (the repro)", "POST", CHAT, DEEP, {}, 400, "json_too_complex"),
    ("deep nesting inside messages", "POST", CHAT, b'{"model": "tiny", "messages": ' + DEEP + b"}", {}, 400,
     "json_too_complex"),
    ("deep nesting, completions", "POST", COMPL, b'{"model": "tiny", "prompt": ' + DEEP + b"}", {}, 400,
     "json_too_complex"),
    ("nesting at the limit in an ignored field", "POST", CHAT, raw_chat('"metadata": ' + "[" * 60 + "]" * 60),
     {}, 200, None),
    ("brackets inside a string are not nesting", "POST", CHAT, chat(messages=[{"role": "user", "content": "[" * 100}]),
     {}, 200, None),
    ("30,000 values", "POST", CHAT, raw_chat('"x": [' + "0," * 30_000 + "0]"), {}, 400, "json_too_complex"),
    ("a million quotes", "POST", CHAT, b'"' * 999_000, {}, 400, "json_too_complex"),
    ("empty body", "POST", CHAT, b"", {}, 400, "invalid_json"),
    ("empty prompt (was a 500)", "POST", COMPL, b'{"model": "tiny", "prompt": ""}', {}, 400, "invalid_value"),
    ("body not an object", "POST", COMPL, b"[1, 2]", {}, 400, "invalid_json"),
    ("truncated JSON", "POST", CHAT, ORDERS[:40].encode(), {}, 400, "invalid_json"),
    ("trailing garbage", "POST", CHAT, ORDERS.encode() + b" {}", {}, 400, "invalid_json"),
    ("Content-Length over the limit", "POST", CHAT, b"{" + b" " * 1_100_000 + b"}", {}, 413, "body_too_large"),
    # --- numbers
    ("seed 1e400 (overflows to inf)", "POST", CHAT, raw_chat('"n": 1, "seed": 1e400'), {}, 400, "invalid_value"),
    ("5000-digit n", "POST", CHAT, raw_chat('"n": ' + "9" * 5000), {}, 400, "invalid_json"),
    ("max_tokens 2**64", "POST", CHAT, chat(max_tokens=2**64), {}, 400, "max_tokens_too_large"),
    ("n 1e300 (an integral float)", "POST", CHAT, raw_chat('"n": 1e300'), {}, 400, "n_too_large"),
    ("max_tokens 2.0 is an integer", "POST", COMPL, b'{"model": "tiny", "prompt": "x", "max_tokens": 2.0}', {}, 200,
     None),
    ("max_tokens 2.5", "POST", COMPL, b'{"model": "tiny", "prompt": "x", "max_tokens": 2.5}', {}, 400,
     "invalid_value"),
    ("temperature 1e-300 (was a 500)", "POST", CHAT, chat(temperature=1e-300), {}, 200, None),
    ("temperature 5e-324, top_p 5e-324", "POST", COMPL,
     b'{"model": "tiny", "prompt": "x", "max_tokens": 2, "temperature": 5e-324, "top_p": 5e-324}', {}, 200, None),
    ("temperature NaN", "POST", CHAT, raw_chat('"temperature": NaN'), {}, 400, "invalid_value"),
    ("top_p Infinity", "POST", CHAT, raw_chat('"top_p": Infinity'), {}, 400, "invalid_value"),
    ("seed -Infinity", "POST", CHAT, raw_chat('"seed": -Infinity'), {}, 400, "invalid_value"),
    ("max_tokens -0", "POST", CHAT, raw_chat('"max_tokens": -0'), {}, 400, "invalid_value"),
    # --- duplicate keys: the last one wins, as in Python's json and pydantic
    ("duplicate model, the last a traversal", "POST", CHAT,
     b'{"model": "tiny", "model": "../decoy", "messages": [{"role": "user", "content": "hi"}]}', {}, 400,
     "invalid_model"),
    ("duplicate model, the last valid", "POST", CHAT,
     b'{"model": "../decoy", "model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}',
     {}, 200, None),
    # --- encodings: only UTF-8 JSON, without a byte-order mark
    ("UTF-16 with BOM", "POST", CHAT, ORDERS.encode("utf-16"), {}, 400, "invalid_json"),
    ("UTF-16-BE without BOM", "POST", CHAT, ORDERS.encode("utf-16-be"), {}, 400, "invalid_json"),
    ("UTF-32 with BOM", "POST", CHAT, ORDERS.encode("utf-32"), {}, 400, "invalid_json"),
    ("UTF-8 with BOM", "POST", CHAT, b"\xef\xbb\xbf" + ORDERS.encode(), {}, 400, "invalid_json"),
    ("Latin-1 byte in a string", "POST", CHAT, ORDERS.replace("hi", "h\u00e9").encode("latin-1"), {}, 400,
     "invalid_json"),
    ("overlong UTF-8 '/'", "POST", CHAT, ORDERS.replace("hi", "h\x00").encode().replace(b"\x00", b"\xc0\xaf"), {},
     400, "invalid_json"),
    ("UTF-8-encoded surrogate", "POST", CHAT, ORDERS.replace("hi", "h\x00").encode().replace(b"\x00", b"\xed\xa0\x80"),
     {}, 400, "invalid_json"),
    ("lone surrogate escape", "POST", CHAT, raw_chat('"user": "\\ud800"'), {}, 400, "invalid_json"),
    ("NUL and control characters in content", "POST", CHAT,
     chat(messages=[{"role": "user", "content": "a\u0000b\u001f\u2028\U0001f600"}]), {}, 200, None),
    ("gzip body", "POST", CHAT, gzip.compress(ORDERS.encode()), {"Content-Encoding": "gzip"}, 400, "invalid_json"),
    ("form-encoded body", "POST", CHAT, b"model=tiny&messages=hi", {"Content-Type": "application/x-www-form-urlencoded"},
     400, "invalid_json"),
    ("JSON without a Content-Type", "POST", CHAT, ORDERS.encode(), {"Content-Type": ""}, 200, None),
    # --- model names that try to leave the store
    ("model ../decoy", "POST", CHAT, chat("../decoy"), {}, 400, "invalid_model"),
    ("model decoy (beside the store, not in it)", "POST", CHAT, chat("decoy"), {}, 404, "model_not_found"),
    ("model evil (a link out of the store)", "POST", CHAT, chat("evil"), {}, 404, "model_not_found"),
    ("model alpha/../../decoy", "POST", COMPL, b'{"model": "alpha/../../decoy", "prompt": "x"}', {}, 400,
     "invalid_model"),
    ("model ..%2Fdecoy", "POST", CHAT, chat("..%2Fdecoy"), {}, 400, "invalid_model"),
    ("model .versions", "POST", CHAT, chat(".versions"), {}, 400, "invalid_model"),
    ("model alpha@0 (a version key)", "POST", CHAT, chat("alpha@0"), {}, 400, "invalid_model"),
    ("model alpha + NUL", "POST", CHAT, chat("alpha\u0000"), {}, 400, "invalid_model"),
    ("model of 10,000 characters", "POST", CHAT, chat("a" * 10_000), {}, 400, "invalid_model"),
    ("stats of ../decoy", "GET", "/v1/stats?model=../decoy", None, {}, 400, "invalid_model"),
    ("stats of evil", "GET", "/v1/stats?model=evil", None, {}, 404, "model_not_found"),
    # --- keys and routes
    ("no key", "POST", CHAT, chat(), {"Authorization": ""}, 401, "invalid_api_key"),
    ("Basic auth", "POST", CHAT, chat(), {"Authorization": "Basic dGVzdDp0ZXN0"}, 401, "invalid_api_key"),
    ("Latin-1 bytes in the key", "GET", "/v1/models", None, {"Authorization": b"Bearer \xe9\xff\xfe"}, 401,
     "invalid_api_key"),
    ("an 8 KB key", "GET", "/v1/models", None, {"Authorization": "Bearer " + "k" * 8192}, 401, "invalid_api_key"),
    ("unknown route without a key", "GET", "/v1/secrets", None, {"Authorization": ""}, 401, "invalid_api_key"),
    ("wrong method without a key", "GET", CHAT, None, {"Authorization": ""}, 401, "invalid_api_key"),
    ("OpenAPI document without a key", "GET", "/openapi.json", None, {"Authorization": ""}, 401, "invalid_api_key"),
    ("unknown route", "GET", "/v1/secrets", None, {}, 404, "not_found"),
    ("double slash", "GET", "//v1/models", None, {}, 404, "not_found"),
    ("wrong method", "PUT", CHAT, None, {}, 405, "method_not_allowed"),
    ("healthz needs no key", "GET", "/healthz", None, {"Authorization": ""}, 200, None),
]
