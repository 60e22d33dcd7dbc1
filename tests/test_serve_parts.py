"""The serving parts that need no Ray: the adapter store, the request parser, the `serve:` config,
the CLI verbs' errors and the shipped Serve config files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from rayft.cli import main
from rayft.config.load import load_pipeline, validate
from rayft.core.errors import ConfigError, UserError
from rayft.serve.protocol import ApiError, ChatRequest, CompletionRequest, parse_body
from rayft.serve.store import LocalAdapterStore, find_adapter, open_store, valid_id

REPO = Path(__file__).resolve().parents[1]


def _adapter(folder: Path, marker: str = "x") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base", "r": 8}))
    (folder / "adapter_model.safetensors").write_text(marker)
    return folder


def test_register_resolve_and_replace(tmp_path):
    store = LocalAdapterStore(tmp_path / "store")
    assert store.list_adapters() == [] and store.resolve("a") is None
    first = store.register(_adapter(tmp_path / "src1", "one"), "a")
    assert store.resolve("a") == first and (first.path / "adapter_model.safetensors").read_text() == "one"
    assert json.loads((first.path / "rayft-adapter.json").read_text())["base_model"] == "base"
    second = store.register(_adapter(tmp_path / "src2", "two"), "a")
    assert second.version != first.version and store.resolve("a") == second
    assert (store.resolve("a").path / "adapter_model.safetensors").read_text() == "two"
    assert store.resolve_key(first.key).path == first.path  # an old version stays loadable by its key
    assert [r.id for r in store.list_adapters()] == ["a"]
    assert not list((tmp_path / "store" / ".versions").glob("*.partial*"))


@pytest.mark.parametrize("bad", ["../x", "..", ".hidden", "a/b", "/etc", "a/../../x", "", "x" * 65, "a b", "a..b",
                                 None, 3])
def test_invalid_ids_never_resolve(tmp_path, bad):
    assert not valid_id(bad)
    store = LocalAdapterStore(tmp_path)
    assert store.resolve(bad) is None
    with pytest.raises(UserError):
        store.register(_adapter(tmp_path / "src"), bad)


def test_links_out_of_the_store_are_refused(tmp_path):
    outside = _adapter(tmp_path / "outside")
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    os.symlink(outside, store_dir / "evil")
    os.symlink("../outside", store_dir / "evil2")
    store = LocalAdapterStore(store_dir)
    assert store.resolve("evil") is None and store.resolve("evil2") is None
    assert store.resolve_key("evil@0") is None and store.resolve_key("../outside@1") is None
    _adapter(store_dir / "by-hand")  # a plain folder copied in by hand is served
    assert store.resolve("by-hand").path == (store_dir / "by-hand").resolve()
    assert [r.id for r in store.list_adapters()] == ["by-hand"]


def test_find_adapter_in_run_stage_and_adapter_folders(tmp_path):
    run = tmp_path / "run"
    _adapter(run / "sft" / "adapter")
    _adapter(run / "dpo" / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"stages": [{"type": "sft", "name": "sft"},
                                                                {"type": "dpo", "name": "dpo"}]}))
    assert find_adapter(run) == run / "dpo" / "adapter"  # the last stage of the run
    assert find_adapter(run, "sft") == run / "sft" / "adapter"
    assert find_adapter(run / "sft") == run / "sft" / "adapter"
    assert find_adapter(run / "sft" / "adapter") == run / "sft" / "adapter"
    with pytest.raises(UserError, match="no finished adapter"):
        find_adapter(run, "ppo")
    with pytest.raises(UserError, match="no such directory"):
        find_adapter(tmp_path / "missing")


def test_store_uris_pick_the_implementation():
    from rayft.serve.object_store import ObjectAdapterStore

    assert isinstance(open_store("file:///tmp/x"), LocalAdapterStore)
    assert isinstance(open_store("/tmp/x"), LocalAdapterStore)
    assert isinstance(open_store("memory://bucket/adapters"), ObjectAdapterStore)


def test_register_cli(tmp_path, capsys):
    run = tmp_path / "run"
    _adapter(run / "sft" / "adapter")
    assert main(["serve", "register", str(run), "--id", "mine", "--store", str(tmp_path / "s")]) == 0
    assert "registered 'mine'" in capsys.readouterr().out
    assert main(["serve", "register", str(run), "--id", "../mine", "--store", str(tmp_path / "s")]) == 2
    assert "adapter id" in capsys.readouterr().err
    assert main(["serve", "register", str(run)]) == 2
    assert "missing --id, --store" in capsys.readouterr().err
    assert main(["serve", "register", str(tmp_path / "nope"), "--id", "x", "--store", str(tmp_path / "s")]) == 2


def test_merge_cli_errors(tmp_path, capsys):
    assert main(["merge", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "no such directory" in capsys.readouterr().err
    _adapter(tmp_path / "a")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "file").write_text("keep")
    assert main(["merge", str(tmp_path / "a"), "--out", str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "out" / "file").read_text() == "keep"


@pytest.mark.parametrize("body, param", [
    (b"{", None), (b'"text"', None), (b'{"model": "m"}', "prompt"), (b'{"model": 3, "prompt": "x"}', "model"),
    (b'{"model": "m", "prompt": "x", "n": 1.5}', "n"), (b'{"model": "m", "prompt": "x", "stream": "yes"}', "stream"),
    (b'{"model": "m", "prompt": "x", "top_p": 0}', "top_p"), (b'{"model": "m", "prompt": "x", "stop": [1]}', "stop"),
])
def test_completion_parser_rejects(body, param):
    with pytest.raises(ApiError) as err:
        parse_body(body, CompletionRequest)
    assert err.value.status == 400 and err.value.body()["error"]["param"] == param


def test_parsers_accept_openai_shapes():
    req = parse_body(b'{"model": "m", "prompt": ["a", "b"], "stop": "x", "temperature": 0, "user": "u"}',
                     CompletionRequest)
    assert req.prompt == ["a", "b"] and req.stops() == ["x"] and req.temperature == 0.0
    chat = parse_body(json.dumps({"model": "m", "max_completion_tokens": 5, "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}]}).encode(),
        ChatRequest)
    assert chat.messages[1].text() == "hi there" and chat.max_completion_tokens == 5


def test_api_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(ApiError(404, "gone", param="model", code="model_not_found")))
    assert err.status == 404 and err.body()["error"] == {"message": "gone", "type": "invalid_request_error",
                                                         "param": "model", "code": "model_not_found"}


def test_serve_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"serve\.limits\.max_n"):
        validate({"serve": {"limits": {"max_n": 0}}})
    with pytest.raises(ConfigError, match=r"serve\.replicas\.num_replica: unknown key; did you mean 'num_replicas'"):
        validate({"serve": {"replicas": {"num_replica": 2}}})
    with pytest.raises(ConfigError, match=r"serve\.merged_models\.0\.name"):
        validate({"serve": {"merged_models": [{"name": "../x", "path": "p"}]}})
    with pytest.raises(ConfigError, match="unique"):
        validate({"serve": {"model_name": "m", "merged_models": [{"name": "m", "path": "p"}]}})


def test_replica_options_fixed_and_autoscaling():
    cfg = validate({"serve": {"replicas": {"num_replicas": 2, "num_cpus": 2}}}).serve.replicas
    assert cfg.deployment_options()["num_replicas"] == 2
    auto = validate({"serve": {"replicas": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}}})
    options = auto.serve.replicas.deployment_options()
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}


def test_demo_serve_file_is_a_valid_app(monkeypatch):
    from rayft.serve.app import apps_from_file

    apps, http = apps_from_file(str(REPO / "serve" / "demo.yaml"), ["serve.max_adapters_per_replica=2"])
    assert http == {"host": "127.0.0.1", "port": 8000}
    assert apps[0]["import_path"] == "rayft.serve.app:build_app"
    pipeline = validate(apps[0]["args"])
    assert pipeline.model.name == "builtin:smollm2-135m-instruct" and pipeline.serve.max_adapters_per_replica == 2
    with pytest.raises(ConfigError, match=r"(?s)applications\.0\.args.*serve\.limits\.max_n"):
        apps_from_file(str(REPO / "serve" / "demo.yaml"), ["serve.limits.max_n=0"])


def test_a_rayft_config_with_a_serve_section_is_an_app(tmp_path):
    from rayft.serve.app import apps_from_file

    config = tmp_path / "my.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "builtin:tiny-random"},
                                      "serve": {"http": {"port": 9001}, "app_name": "mine"}}))
    apps, http = apps_from_file(str(config), [])
    assert http == {"host": "127.0.0.1", "port": 9001} and apps[0]["name"] == "mine"
    assert load_pipeline(config).pipeline.serve.http.port == 9001


def test_vllm_gpu_file_matches_ray_serve_llm():
    """Config only (vLLM needs a GPU): the LoRA section is checked against Ray Serve LLM's own model;
    the full LLMConfig cannot be built without vLLM installed."""
    raw = yaml.safe_load((REPO / "serve" / "vllm_gpu.yaml").read_text())
    app = raw["applications"][0]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    from ray.llm._internal.serve.core.configs.llm_config import LoraConfig

    for llm in app["args"]["llm_configs"]:
        LoraConfig.model_validate(llm["lora_config"])
        assert llm["engine_kwargs"]["enable_lora"] is True


# ---- hostile bodies, and the OpenAPI document against the parser and the `openai` client ----------
def test_json_bounds_stop_deep_and_huge_bodies_before_parsing():
    from rayft.serve.protocol import MAX_JSON_DEPTH, check_json_bounds

    check_json_bounds(b'{"a": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}")
    check_json_bounds(b'{"prompt": "' + b"[" * 10_000 + b'\\"[[["}')  # brackets in strings are text
    for raw, what in [(b"[" * 100_000 + b"]" * 100_000, "nests deeper"), (b"[" + b"0," * 30_000 + b"0]", "values"),
                      (b'"' * 100_000, "values")]:
        with pytest.raises(ApiError, match=what) as err:
            parse_body(raw, ChatRequest)
        assert err.value.status == 400 and err.value.code == "json_too_complex"


@pytest.mark.parametrize("raw, why", [
    ('{"model": "m", "prompt": "x"}'.encode("utf-16"), "UTF-16 byte-order mark"),
    (b'\xef\xbb\xbf{"model": "m", "prompt": "x"}', "UTF-8 byte-order mark"),
    ('{"model": "m", "prompt": "\u00e9"}'.encode("latin-1"), "not UTF-8"),
    (b'{"model": "m", "prompt": "\\ud800"}', "hex escape"),
    (b'{"model": "m", "prompt": "x", "n": ' + b"9" * 5000 + b"}", "number out of range"),
])
def test_every_unreadable_body_is_invalid_json(raw, why):
    with pytest.raises(ApiError, match=why) as err:
        parse_body(raw, CompletionRequest)
    assert err.value.code == "invalid_json" and err.value.status == 400


def test_numbers_follow_json_not_python():
    assert parse_body(b'{"model": "m", "prompt": "x", "max_tokens": 2.0, "n": 1e0}', CompletionRequest).max_tokens == 2
    for field in ('"max_tokens": 2.5', '"max_tokens": "2"', '"temperature": NaN', '"top_p": Infinity',
                  '"seed": 1e400', '"n": true'):
        with pytest.raises(ApiError) as err:
            parse_body(b'{"model": "m", "prompt": "x", ' + field.encode() + b"}", CompletionRequest)
        assert err.value.code == "invalid_value", field


def _openapi() -> dict:
    from rayft.serve.ingress import app
    from rayft.serve.openapi import openapi_document

    return openapi_document(app.routes, "test")


@pytest.mark.parametrize("path, model", [("/v1/completions", CompletionRequest), ("/v1/chat/completions", ChatRequest)])
def test_openapi_request_schema_is_exactly_what_the_parser_accepts(path, model):
    """schemathesis generates bodies from the published document, valid and invalid ones; jsonschema
    judges each against the document, and the parser must agree on every one (this found integral
    floats like `"max_tokens": 2.0`, valid JSON Schema integers, refused by the strict parser)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012
    from schemathesis import GenerationMode

    doc = _openapi()
    registry = Registry().with_resource("urn:api", Resource.from_contents(doc, default_specification=DRAFT202012))
    judge = Draft202012Validator({"$ref": f"urn:api#/components/schemas/{model.__name__}"}, registry=registry)
    operation = schemathesis.openapi.from_dict(doc)[path]["POST"]
    verdicts = {True: 0, False: 0}
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(mode))
        def agree(case):
            sent = case.as_transport_kwargs(base_url="http://127.0.0.1:9")  # the bytes a client would send
            raw = json.dumps(sent["json"]).encode() if "json" in sent else sent.get("data") or b""
            try:
                valid = judge.is_valid(json.loads(raw))
            except ValueError:
                valid = False
            try:
                parse_body(raw if isinstance(raw, bytes) else raw.encode(), model)
                accepted = True
            except ApiError as err:
                assert err.status == 400
                accepted = False
            assert accepted == valid, raw[:300]
            verdicts[valid] += 1

        agree()
    assert verdicts[True] > 10 and verdicts[False] > 10, verdicts


def test_openapi_request_fields_are_the_openai_clients():
    """Every field rayft documents is one the `openai` client sends under the same name, and the
    required ones are the client's required ones (its TypedDicts mark them `Required`)."""
    import typing

    import openai.types.chat.completion_create_params as chat_params
    import openai.types.completion_create_params as completion_params
    from openai.types.chat import ChatCompletionContentPartTextParam

    schemas = _openapi()["components"]["schemas"]
    for ours, theirs in [("CompletionRequest", completion_params.CompletionCreateParamsNonStreaming),
                         ("ChatRequest", chat_params.CompletionCreateParamsNonStreaming),
                         ("TextPart", ChatCompletionContentPartTextParam)]:
        hints = typing.get_type_hints(theirs, include_extras=True)
        required = {k for k, t in hints.items() if typing.get_origin(t) is typing.Required}
        assert set(schemas[ours]["properties"]) <= set(hints), ours
        assert set(schemas[ours]["required"]) == required, ours
    def role(message_type) -> str:  # Required[Literal["user"]] -> "user"
        return typing.get_args(typing.get_args(typing.get_type_hints(message_type, include_extras=True)["role"])[0])[0]

    theirs = {role(t) for t in typing.get_args(chat_params.ChatCompletionMessageParam)}
    assert set(schemas["ChatMessage"]["properties"]["role"]["enum"]) <= theirs, theirs


def test_catch_all_answers_an_unexpected_error_as_a_json_500_with_the_logged_request_id():
    """The ingress' last line of defence, driven as the ASGI server drives it: a route that raises
    something no handler knows gets OpenAI's error shape, not Starlette's plain-text 500."""
    import asyncio

    from rayft.serve.ingress import CatchAll

    async def broken(scope, receive, send):
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    def call(path: str) -> list[dict]:
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"x-request-id", b"req-42")],
                 "query_string": b"", "root_path": ""}
        asyncio.run(CatchAll(broken)(scope, receive, send))
        return sent

    # Ray's `ray.serve` logger does not propagate, and its handler may hold a stream that an earlier
    # test's capture replaced: listen on the logger itself.
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    serve_log = logging.getLogger("ray.serve")
    serve_log.addHandler(handler)
    try:
        start, body = call("/v1/completions")
    finally:
        serve_log.removeHandler(handler)
    assert start["status"] == 500 and (b"content-type", b"application/json") in start["headers"]
    error = json.loads(body["body"])["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error" and "req-42" in error["message"]
    log = stream.getvalue()
    assert "request id req-42" in log and "RuntimeError: boom" in log
    assert [m["status"] for m in call("/late") if "status" in m] == [200]  # started: nothing more to send
