"""The HTTP ingress: OpenAI-compatible routes on FastAPI, as a Serve deployment.

Everything a client can get wrong is checked here, before a model replica sees the request: API key,
body size, JSON, field types, limits, the model name (base, merged model, or an adapter id that must
resolve inside the store). Errors are OpenAI-style JSON with a 4xx status; anything unexpected is a
500 in the same shape with a request id that is also in the log (`CatchAll`), never plain text.
Every route but `/healthz` needs the key, unknown ones included. `/openapi.json` documents the API.
"""


import asyncio
import hmac
import logging
import os
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from rayft.core.version import __version__
from rayft.schema.serve import ServeConfig
from rayft.serve.engine import adds_bos
from rayft.serve.openapi import SSE_EVENT, errors, openapi_document, request_body
from rayft.serve.protocol import (ApiError, ChatRequest, CompletionRequest, GenRequest, StreamFormatter,
                                  chat_body, completion_body, parse_body)
from rayft.serve.store import open_store, valid_id

log = logging.getLogger("ray.serve")
# FastAPI's own /openapi.json would be open to all; the ingress serves it behind the key instead.
app = FastAPI(title="rayft", docs_url=None, redoc_url=None, openapi_url=None)
RETRIES = 3  # a request whose replica died is re-sent (generation has no side effects)
POST_ANSWERS = {200: {"description": "The completion; server-sent events with `stream: true`",
                      "content": {"text/event-stream": {"schema": SSE_EVENT}}},
                **errors(400, 401, 404, 413, 422, 500, 503)}


def server_error(request_id: str, message: str = "the server failed unexpectedly") -> ApiError:
    return ApiError(500, f"{message}; request id {request_id} (in the server log)", type="server_error",
                    code="internal_error")


class CatchAll:
    """ASGI middleware: an exception that nothing turned into an answer becomes a 500 in OpenAI's error
    shape, with the request id Serve gives every request (`X-Request-ID`), which the log line names too.
    (An `exception_handler(Exception)` would do the same, but Starlette re-raises after answering.)"""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:  # noqa: BLE001 - the point: nothing escapes as plain text
            request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex
            log.exception("unexpected error in %s %s, request id %s", scope.get("method"), scope.get("path"),
                          request_id)
            if not started:  # else the client already has a status line; the log keeps the error
                error = server_error(request_id)
                await JSONResponse(error.body(), status_code=500)(scope, receive, send)


app.add_middleware(CatchAll)


@app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Unknown routes and wrong methods never reach a route's key check: check the key here, so that a
    # client without one learns nothing, not even which paths exist (docs/serving.md: all but /healthz).
    try:
        serve.get_replica_context().servable_object._authorize(request)
    except ApiError as err:
        return JSONResponse(err.body(), status_code=err.status)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                 code=code).body(), status_code=exc.status_code)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(ApiError(400, str(exc)[:500], code="invalid_value").body(), status_code=400)


def _request_id(request: Request) -> str:
    return request.headers.get("x-request-id") or uuid.uuid4().hex  # Serve's proxy sets it on every request


class _Model:
    """A servable model: its handle, tokenizer (for templates and prompt length) and adapter key."""

    def __init__(self, name: str, handle: Any, tokenizer: Any, key: str | None = None):
        self.name, self.handle, self.tokenizer, self.key = name, handle, tokenizer, key


@serve.deployment
@serve.ingress(app)
class OpenAIIngress:
    def __init__(self, base_name: str, base_path: str, base_handle: Any, merged: list[tuple[str, str]],
                 merged_handles: list[Any], cfg: ServeConfig):
        from rayft.models.loader import load_tokenizer

        self.cfg = cfg  # validated by the loader (rayft.serve.app.build_app)
        self.limits = self.cfg.limits
        self.store = open_store(self.cfg.adapter_store)
        self.base = _Model(base_name, base_handle, load_tokenizer(base_path))
        self.merged = {name: _Model(name, handle, load_tokenizer(path))
                       for (name, path), handle in zip(merged, merged_handles)}
        env = os.environ.get(self.cfg.auth.api_keys_env or "", "") if self.cfg.auth.api_keys_env else ""
        self.api_keys = [k for k in self.cfg.auth.api_keys + [k.strip() for k in env.split(",")] if k]
        self.created = int(time.time())
        self.openapi_doc: dict[str, Any] | None = None

    # ---- checks -------------------------------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        if not self.api_keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.strip().encode(), k.encode())
                                                 for k in self.api_keys):
            raise ApiError(401, "missing or invalid API key (send `Authorization: Bearer <key>`)",
                           code="invalid_api_key")

    async def _body(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is {declared} bytes; the limit is {limit}", code="body_too_large")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"the request body exceeds {limit} bytes", code="body_too_large")
                chunks.append(chunk)
        except ClientDisconnect:  # a half-closed socket can still read the answer
            raise ApiError(400, "the client ended the request before sending the whole body",
                           code="incomplete_body") from None
        return b"".join(chunks)

    def _model(self, name: str) -> _Model:
        if name == self.base.name:
            return self.base
        if name in self.merged:
            return self.merged[name]
        if not valid_id(name):
            raise ApiError(400, f"'{name[:80]}' is not a valid model name (letters, digits, '.', '_', '-'; "
                           "adapter ids never contain a path)", param="model", code="invalid_model")
        ref = self.store.resolve(name)
        if ref is None:
            raise ApiError(404, f"the model '{name}' does not exist (see GET /v1/models)", param="model",
                           code="model_not_found")
        return _Model(name, self.base.handle, self.base.tokenizer, key=ref.key)

    def _check_sampling(self, body: Any, max_tokens: int | None) -> int:
        limits = self.limits
        if max_tokens is not None and max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}",
                           param="max_tokens", code="max_tokens_too_large")
        if body.n > limits.max_n:
            raise ApiError(400, f"n is {body.n}; this server allows at most {limits.max_n}", param="n",
                           code="n_too_large")
        if len(body.stops()) > limits.max_stop:
            raise ApiError(400, f"at most {limits.max_stop} stop strings", param="stop", code="invalid_value")
        if body.stream and body.n > 1:
            raise ApiError(400, "streaming supports n=1 only", param="n", code="invalid_value")
        return max_tokens or limits.default_max_tokens

    def _check_prompt(self, model: _Model, prompt: str) -> int:
        tokens = len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if tokens == 0 and not adds_bos(model.tokenizer):  # the model would run on 0 tokens: a crash, not text
            raise ApiError(400, "prompt: an empty prompt leaves this model nothing to continue (it has no "
                           "begin-of-sequence token)", param="prompt", code="invalid_value")
        if tokens > self.limits.max_prompt_tokens:
            raise ApiError(400, f"the prompt has {tokens} tokens; this server allows at most "
                           f"{self.limits.max_prompt_tokens}", param="prompt", code="context_length_exceeded")
        return tokens

    # ---- calls to the model replicas ----------------------------------------------------------
    def _handle(self, model: _Model) -> Any:
        return model.handle.options(multiplexed_model_id=model.key) if model.key else model.handle

    async def _generate(self, model: _Model, request: GenRequest):
        for attempt in range(RETRIES):
            try:
                return await self._handle(model).generate.remote(request)
            except (RayActorError, ActorUnavailableError) as exc:  # the replica died: Serve replaces it
                if attempt == RETRIES - 1:
                    raise ApiError(503, f"model replica unavailable ({type(exc).__name__}); retry",
                                   type="server_error", code="replica_unavailable") from None
                log.warning("replica failed (%s); retrying request", type(exc).__name__)
                await asyncio.sleep(0.5 * (attempt + 1))

    def _stream(self, model: _Model, request: GenRequest, chat: bool, request_id: str) -> StreamingResponse:
        fmt = StreamFormatter(model.name, chat)
        pieces = self._handle(model).options(stream=True).stream.remote(request)

        async def events():
            if (first := fmt.first()) is not None:
                yield first
            try:
                async for delta, reason in pieces:
                    yield fmt.finish(reason) if reason else fmt.delta(delta)
            except ApiError as err:
                yield fmt.error(err)
            except (RayActorError, ActorUnavailableError):
                yield fmt.error(ApiError(503, "model replica failed during the stream", type="server_error",
                                         code="replica_unavailable"))
            except Exception:  # noqa: BLE001 - the status line is sent: end the stream with the error
                log.exception("unexpected error during a stream, request id %s", request_id)
                yield fmt.error(server_error(request_id, "the stream failed unexpectedly"))
            yield fmt.DONE

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # ---- routes -------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> dict[str, Any]:
        """The OpenAPI document (built once per replica from the routes and the request models)."""
        self._authorize(request)
        if self.openapi_doc is None:
            self.openapi_doc = openapi_document(request.app.routes, __version__,
                                                request.scope.get("root_path", ""), keyed=bool(self.api_keys))
        return self.openapi_doc

    @app.get("/v1/models", responses=errors(401))
    async def models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        rows = [{"id": self.base.name, "object": "model", "created": self.created, "owned_by": "rayft",
                 "root": self.base.name, "parent": None}]
        rows += [{"id": name, "object": "model", "created": self.created, "owned_by": "rayft", "root": name,
                  "parent": None} for name in self.merged]
        rows += [{"id": ref.id, "object": "model", "created": self.created, "owned_by": "rayft",
                  "root": self.base.name, "parent": self.base.name} for ref in self.store.list_adapters()]
        return {"object": "list", "data": rows}

    @app.get("/v1/stats", responses=errors(400, 401, 404, 500, 503))
    async def stats(self, request: Request, model: str | None = None) -> dict[str, Any]:
        """Counters of one model replica (the one holding `model`'s adapter, when given)."""
        self._authorize(request)
        target = self._model(model) if model else self.base
        return await self._handle(target).stats.remote()

    @app.post("/v1/completions", openapi_extra=request_body(CompletionRequest), responses=POST_ANSWERS)
    async def completions(self, request: Request):
        self._authorize(request)
        body = parse_body(await self._body(request), CompletionRequest)
        model = self._model(body.model)
        max_tokens = self._check_sampling(body, body.max_tokens)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or len(prompts) > self.limits.max_prompts:
            raise ApiError(400, f"prompt: give 1 to {self.limits.max_prompts} prompts", param="prompt",
                           code="invalid_value")
        if body.stream and len(prompts) > 1:
            raise ApiError(400, "streaming supports one prompt", param="prompt", code="invalid_value")
        prompt_tokens = sum(self._check_prompt(model, p) for p in prompts)
        requests = [GenRequest(p, max_tokens, body.temperature, body.top_p, body.n, body.stops()) for p in prompts]
        if body.stream:
            return self._stream(model, requests[0], chat=False, request_id=_request_id(request))
        results = await asyncio.gather(*(self._generate(model, r) for r in requests))
        return completion_body(model.name, list(results), prompt_tokens)

    @app.post("/v1/chat/completions", openapi_extra=request_body(ChatRequest), responses=POST_ANSWERS)
    async def chat_completions(self, request: Request):
        self._authorize(request)
        body = parse_body(await self._body(request), ChatRequest)
        model = self._model(body.model)
        max_tokens = self._check_sampling(body, body.max_completion_tokens or body.max_tokens)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        try:
            prompt = model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a template may reject e.g. the order of roles
            raise ApiError(400, f"messages: the model's chat template rejected them ({exc})"[:400],
                           param="messages", code="invalid_value") from None
        prompt_tokens = self._check_prompt(model, prompt)
        request_ = GenRequest(prompt, max_tokens, body.temperature, body.top_p, body.n, body.stops())
        if body.stream:
            return self._stream(model, request_, chat=True, request_id=_request_id(request))
        return chat_body(model.name, await self._generate(model, request_), prompt_tokens)
