"""The API's OpenAPI 3.1 document, served at `/openapi.json`.

Request bodies are the JSON Schemas of the same pydantic models that `parse_body` validates with
(attached to each route by `request_body`), so the document cannot drift from what the server
accepts. Every route but `/healthz` is documented as needing the bearer key, and every error status
the route can answer is documented with OpenAI's error shape (`ErrorBody`).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape, the body of every 4xx and 5xx answer."""

    error: ErrorDetail


# One server-sent event of a streamed answer, as schemathesis and OpenAPI 3.2's `itemSchema` read the
# stream: {data, event, id, retry}. `data` is a JSON chunk (`chat.completion.chunk` / `text_completion`),
# or an error in OpenAI's shape when the stream fails midway, and finally the literal `[DONE]` (not JSON,
# so `data` carries no contentMediaType: a checker would try to parse `[DONE]`).
SSE_EVENT: dict[str, Any] = {
    "type": "object", "required": ["data"],
    "properties": {"data": {"type": "string", "description": "a JSON chunk, an OpenAI-shaped error, or the final `[DONE]`"},
                   "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"}}}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's `openapi_extra`: its JSON body is `model` (the route reads and validates it itself)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema(ref_template=REF)}}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses`: the error statuses it answers, each with OpenAI's error shape."""
    what = {400: "Invalid request (malformed JSON, a bad field, a limit exceeded)", 401: "Missing or wrong API key",
            404: "Unknown model or adapter", 405: "Wrong method", 413: "Body too large",
            422: "Adapter cannot be loaded onto the base model", 500: "Unexpected server error (with a request id)",
            503: "Model replica or adapter store unavailable"}
    return {status: {"model": ErrorBody, "description": what[status]} for status in statuses}


def openapi_document(routes: list[Any], version: str, root_path: str = "", keyed: bool = True) -> dict[str, Any]:
    """The OpenAPI document of `routes` (a FastAPI app's). `keyed`: the server requires an API key."""
    from fastapi.openapi.utils import get_openapi

    doc = copy.deepcopy(get_openapi(
        title="rayft", version=version, openapi_version="3.1.0", routes=routes,
        description="OpenAI-compatible completions and chat completions for a base model, its LoRA adapters "
                    "and merged models. Errors are OpenAI-shaped: {\"error\": {message, type, param, code}}."))
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content and "title" in content["schema"]:  # hoist the model's schema into components
                schema = content["schema"]
                schemas.update(schema.pop("$defs", {}))
                schemas[schema["title"]] = schema
                content["schema"] = {"$ref": REF.format(model=schema["title"])}
            if "HTTPValidationError" in str(operation["responses"].get("422")):
                del operation["responses"]["422"]  # FastAPI's default; the ingress answers those with a 400
            if path == "/healthz" or not keyed:
                operation["security"] = []
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if keyed:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    if root_path:
        doc["servers"] = [{"url": root_path}]
    return doc
