"""The OpenAI wire format: request models (validated strictly), response bodies and errors.

Bad input is always an `ApiError`, rendered as OpenAI's `{"error": {"message", "type", "param",
"code"}}` with a 4xx status, never a 500. A body is bounded in nesting and size (`check_json_bounds`)
before any parser sees it, and parsed once, by pydantic, so what is accepted is exactly what the
request models (and the OpenAPI document built from them) say.
"""

from __future__ import annotations

import codecs
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|function-\w+\[.*\])$")  # not field names


class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error",  # noqa: A002
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def __reduce__(self):  # raised inside a replica, re-raised in the ingress: must pickle
        return (ApiError, (self.status, self.message, self.type, self.param, self.code))

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON Schema (and so the OpenAPI document) calls 2.0 an integer; strict pydantic alone would refuse it.
# Strings stay refused: `"max_tokens": "5"` is a 400.
JsonInt = Annotated[int, BeforeValidator(_integral)]
Count = Annotated[int, Field(ge=1), BeforeValidator(_integral)]  # the bound inside: it stays in the schema


class _Body(BaseModel):
    # Unknown OpenAI fields (user, logit_bias, ...) are ignored; known ones are type-checked strictly.
    # NaN and Infinity are not JSON (RFC 8259), though lenient parsers accept them: refuse them.
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class _Sampling(_Body):
    model: str = Field(min_length=1)
    max_tokens: Count | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: Count = 1
    stream: bool = False
    stop: str | list[str] | None = None
    seed: JsonInt | None = None

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else [s for s in (self.stop or []) if s]


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Count | None = None


MAX_JSON_DEPTH = 64  # an OpenAI body nests about 6 levels (messages, content parts); tool schemas a few more
MAX_JSON_VALUES = 20_000  # strings, containers and separators; a 1 MB body of `[0,0,...` has 500,000
# One string (skipped whole, so brackets inside it do not count) or one structural character. A `"`
# left alone is an unterminated string: the scan stops there and the parser reports it.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},"]', re.DOTALL)
_BOMS = [(codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF8, "UTF-8"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")]  # UTF-32 LE starts like UTF-16 LE


def check_json_bounds(raw: bytes, max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES) -> None:
    """Refuse a body nested deeper than `max_depth` or with more than `max_values` values, before it is
    parsed: recursive parsers fail on deep nesting (Python's json raises RecursionError), and a body of
    many small values costs time and memory far beyond its size (one validation error per bad item).
    A regex scan stops at the first excess, so a hostile megabyte costs a few milliseconds."""
    depth = values = 0
    for match in _JSON_TOKEN.finditer(raw):
        token = match.group()
        if token in (b"]", b"}"):
            depth -= 1
            continue
        if token == b'"':
            return
        values += 1
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise ApiError(400, f"the request body nests deeper than {max_depth} levels",
                               code="json_too_complex")
        if values > max_values:
            raise ApiError(400, f"the request body holds more than {max_values} JSON values",
                           code="json_too_complex")


def _encoding_problem(raw: bytes) -> str | None:
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return f"it starts with a {name} byte-order mark; send UTF-8 without one"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 (byte {exc.start}: {exc.reason})"
    return None


def parse_body(raw: bytes, model: type[_Body]) -> Any:
    """A validated request from raw JSON bytes, or an ApiError naming the bad field."""
    check_json_bounds(raw)
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        why = _encoding_problem(raw) or first["msg"].removeprefix("Invalid JSON: ")
        raise ApiError(400, f"the request body is not valid JSON: {why}"[:300], code="invalid_json")
    if not first["loc"] and first["type"] in ("model_type", "model_attributes_type", "dict_type"):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    param = ".".join(str(p) for p in first["loc"] if not _UNION_TAG.match(str(p)))
    message = f"{param or 'body'}: {first['msg']}"
    if "input" in first and not isinstance(first["input"], (dict, list)):
        message += f" (got {first['input']!r})"[:200]
    raise ApiError(400, message, param=param or None, code="invalid_value")


@dataclass
class GenRequest:
    """One prompt to complete, already templated; `n` completions of it."""

    prompt: str
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stops: list[str] = field(default_factory=list)


@dataclass
class GenResult:
    texts: list[str]
    finish_reasons: list[str]  # "stop" or "length", per completion
    completion_tokens: int


def _ids(prefix: str) -> tuple[str, int]:
    return f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(model: str, results: list[GenResult], prompt_tokens: int) -> dict[str, Any]:
    rid, created = _ids("cmpl")
    choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
               for i, (text, reason) in enumerate((t, r) for res in results for t, r in zip(res.texts, res.finish_reasons))]
    return {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices,
            "usage": usage(prompt_tokens, sum(r.completion_tokens for r in results))}


def chat_body(model: str, result: GenResult, prompt_tokens: int) -> dict[str, Any]:
    rid, created = _ids("chatcmpl")
    choices = [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": reason} for i, (text, reason) in enumerate(zip(result.texts, result.finish_reasons))]
    return {"id": rid, "object": "chat.completion", "created": created, "model": model, "choices": choices,
            "usage": usage(prompt_tokens, result.completion_tokens)}


class StreamFormatter:
    """Server-sent event chunks of one streamed completion (`chat` or text), OpenAI's shapes."""

    def __init__(self, model: str, chat: bool):
        self.model, self.chat = model, chat
        self.id, self.created = _ids("chatcmpl" if chat else "cmpl")

    def _event(self, choice: dict[str, Any]) -> str:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        chunk = {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": [choice]}
        return f"data: {json.dumps(chunk)}\n\n"

    def first(self) -> str | None:
        return self._event({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None}) if self.chat else None

    def delta(self, text: str) -> str:
        if self.chat:
            return self._event({"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None})
        return self._event({"index": 0, "text": text, "logprobs": None, "finish_reason": None})

    def finish(self, reason: str) -> str:
        if self.chat:
            return self._event({"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason})
        return self._event({"index": 0, "text": "", "logprobs": None, "finish_reason": reason})

    @staticmethod
    def error(err: ApiError) -> str:
        return f"data: {json.dumps(err.body())}\n\n"

    DONE = "data: [DONE]\n\n"
