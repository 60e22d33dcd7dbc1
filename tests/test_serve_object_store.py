"""The object-store adapter store (`rayft.serve.object_store`), on real fsspec filesystems:
`memory://` (in this process) and `local://` (fsspec's local filesystem, the same code path as
s3:// or gs:// without a cloud account). No S3 or GCS is reachable here, so those protocols are
checked only for the error a user gets when their package is missing."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import fsspec
import pytest
from serve_helpers import QUESTION, train_adapter

from rayft.cli import main
from rayft.core.errors import UserError
from rayft.models.loader import load_tokenizer
from rayft.schema.serve import ServeConfig
from rayft.serve.object_store import ObjectAdapterStore
from rayft.serve.protocol import GenRequest
from rayft.serve.store import open_store


def _adapter(folder: Path, marker: str) -> Path:
    (folder / "checkpoint-3").mkdir(parents=True)
    (folder / "checkpoint-3" / "optimizer.pt").write_text("not served")
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base", "r": 8}))
    (folder / "adapter_model.safetensors").write_text(marker)
    return folder


@pytest.fixture(params=["memory", "local"])
def uri(request, tmp_path) -> str:
    if request.param == "memory":
        return f"memory://rayft-test-{uuid.uuid4().hex[:8]}/adapters"
    return f"local://{tmp_path}/bucket/adapters"


def test_register_fetch_and_replace(uri, tmp_path):
    store = ObjectAdapterStore(uri, cache_dir=tmp_path / "cache", pointer_ttl_s=0)
    assert isinstance(open_store(uri), ObjectAdapterStore)
    assert store.list_adapters() == [] and store.resolve("a") is None
    first = store.register(_adapter(tmp_path / "src1", "one"), "a")
    assert store.resolve("a") == first
    local = store.local_path(first)
    assert (local / "adapter_model.safetensors").read_text() == "one"
    assert json.loads((local / "rayft-adapter.json").read_text())["base_model"] == "base"
    assert not (local / "checkpoint-3").exists()  # training checkpoints are not uploaded
    second = store.register(_adapter(tmp_path / "src2", "two"), "a")
    assert second.version != first.version and store.resolve("a") == second
    assert (store.local_path(store.resolve("a")) / "adapter_model.safetensors").read_text() == "two"
    old = store.resolve_key(first.key)  # a replica still holding the old version can reload it
    assert old is not None and (store.local_path(old) / "adapter_model.safetensors").read_text() == "one"
    assert [r.id for r in store.list_adapters()] == ["a"]
    assert not list((tmp_path / "cache").glob(".*.partial-*"))


def test_the_current_version_is_also_in_ray_serve_llms_layout(uri, tmp_path):
    """`<uri>/.latest/<id>/` holds the current version's files, which is where the vllm engine's
    Ray Serve LLM loads adapter `<id>` from; a file only the old version had is removed."""
    store = ObjectAdapterStore(uri, cache_dir=tmp_path / "cache", pointer_ttl_s=0)
    old = _adapter(tmp_path / "src1", "one")
    (old / "tokenizer.json").write_text("{}")
    store.register(old, "a")
    store.register(_adapter(tmp_path / "src2", "other"), "b")
    latest = f"{store.root}/.latest"
    assert store.fs.cat_file(f"{latest}/a/adapter_model.safetensors") == b"one"
    assert store.fs.exists(f"{latest}/a/tokenizer.json")
    store.register(_adapter(tmp_path / "src3", "two"), "a")
    assert store.fs.cat_file(f"{latest}/a/adapter_model.safetensors") == b"two"
    assert not store.fs.exists(f"{latest}/a/tokenizer.json")
    assert json.loads(store.fs.cat_file(f"{latest}/a/rayft-adapter.json"))["version"] == store.resolve("a").version
    assert store.fs.cat_file(f"{latest}/b/adapter_model.safetensors") == b"other"
    assert not store.fs.exists(f"{latest}/a/checkpoint-3")
    assert [r.id for r in store.list_adapters()] == ["a", "b"]


def test_another_replica_sees_a_new_registration_after_the_pointer_ttl(uri, tmp_path):
    writer = ObjectAdapterStore(uri, cache_dir=tmp_path / "c1")
    reader = ObjectAdapterStore(uri, cache_dir=tmp_path / "c2", pointer_ttl_s=60)
    assert reader.resolve("b") is None  # cached as absent for 60 s
    ref = writer.register(_adapter(tmp_path / "src", "x"), "b")
    assert reader.resolve("b") is None
    assert reader.resolve("b", fresh=True) == ref
    assert reader.list_adapters() == [ref]  # listing always re-reads the pointers


def test_ids_bad_pointers_and_missing_versions(uri, tmp_path):
    store = ObjectAdapterStore(uri, cache_dir=tmp_path / "cache", pointer_ttl_s=0)
    store.register(_adapter(tmp_path / "src", "x"), "good")
    for bad in ("../good", "/etc", ".versions", "", "a/b"):
        assert store.resolve(bad) is None
        assert store.resolve_key(f"{bad}@1") is None
    fs, root = fsspec.core.url_to_fs(uri)
    fs.pipe_file(f"{root}/broken.json", b"{not json")
    fs.pipe_file(f"{root}/escape.json", json.dumps({"version": "../../etc"}).encode())
    assert store.resolve("broken") is None and store.resolve("escape") is None
    assert [r.id for r in store.list_adapters()] == ["good"]
    assert store.resolve_key("good@123abc") is None  # a version never registered
    with pytest.raises(UserError, match="not a PEFT adapter"):
        store.register(tmp_path, "c")
    with pytest.raises(UserError, match="adapter id"):
        store.register(tmp_path / "src", "../c")


def test_unknown_protocols_and_missing_packages_are_user_errors():
    with pytest.raises(UserError, match="Protocol not known"):
        open_store("nosuch://bucket/adapters")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="s3fs"):
            open_store("s3://bucket/adapters")


def test_cli_register_into_an_object_store(tmp_path, capsys):
    uri = f"local://{tmp_path}/bucket"
    run = tmp_path / "run" / "sft" / "adapter"
    _adapter(run, "m")
    assert main(["serve", "register", str(tmp_path / "run"), "--id", "orders", "--store", uri]) == 0
    out = capsys.readouterr().out
    assert f"{uri}/.versions/orders@" in out
    assert (tmp_path / "bucket" / "orders.json").is_file()  # the pointer object
    assert open_store(uri).resolve("orders") is not None


def test_a_model_replica_serves_an_adapter_from_an_object_store(tmp_path, tiny_model_path, monkeypatch):
    """The model deployment's class, in this process (no Ray): an adapter registered into a
    `local://` object store is fetched into the node cache, loaded and answers like it was trained."""
    from rayft.schema.sections import ModelConfig
    from rayft.serve.deployments import ModelServer

    monkeypatch.setenv("RAYFT_HOME", str(tmp_path / "home"))
    uri = f"local://{tmp_path}/bucket"
    adapter = train_adapter(tiny_model_path, "apples are red", tmp_path / "alpha")
    ref = open_store(uri).register(adapter, "alpha")
    cfg = ServeConfig.model_validate({"adapter_store": uri, "batching": {"enabled": False}})
    server = ModelServer.func_or_class(tiny_model_path, ModelConfig(name=tiny_model_path), cfg, uri)
    tokenizer = load_tokenizer(tiny_model_path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                           add_generation_prompt=True)

    async def ask() -> str:
        path = await server.adapter_path(ref.key)
        await asyncio.to_thread(server.engine.load_adapter, ref.key, path)
        result = await asyncio.to_thread(server.engine.generate, [GenRequest(prompt, 8, temperature=0)], ref.key, path)
        return result[0].texts[0]

    assert asyncio.run(ask()).startswith("apples are red")
    cached = list((tmp_path / "home" / "adapter-cache").glob(f"*/{ref.key}/adapter_config.json"))
    assert len(cached) == 1  # fetched once into this node's cache
