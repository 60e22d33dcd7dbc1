"""The OpenAI wire format: request models (validated strictly), response bodies and errors.

Bad input is always an `ApiError`, rendered as OpenAI's `{"error": {"message", "type", "param",
"code"}}` with a 4xx status, never a 500.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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


class _Body(BaseModel):
    # Unknown OpenAI fields (user, logit_bias, ...) are ignored; known ones are type-checked strictly.
    model_config = ConfigDict(extra="ignore", strict=True)


class _Sampling(_Body):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None

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
    max_completion_tokens: int | None = Field(None, ge=1)


def parse_body(raw: bytes, model: type[_Body]) -> Any:
    """A validated request from raw JSON bytes, or an ApiError naming the bad field."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if not _UNION_TAG.match(str(p)))
        message = f"{param or 'body'}: {first['msg']}"
        if "input" in first and not isinstance(first["input"], (dict, list)):
            message += f" (got {first['input']!r})"[:200]
        raise ApiError(400, message, param=param or None, code="invalid_value") from None


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
