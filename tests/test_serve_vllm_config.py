"""What a `serve.engine: vllm` config becomes, checked without vLLM: the Ray Serve LLM `LLMConfig`
arguments for the base and merged models (CPU placement, KV cache, LoRA from an object store),
the schema refusing the other engine's fields, and clear errors where Ray Serve LLM cannot do what
the config asks (adapters in a local store, API keys). The live app: tests/test_serve_vllm.py."""

from __future__ import annotations

import pytest

from rayft.config.load import validate
from rayft.core.errors import ConfigError


def _pipeline(tmp_path, **serve):
    return validate({"model": {"name": "builtin:tiny-random"},
                     "serve": {"engine": "vllm", "adapter_store": str(tmp_path / "adapters"), **serve}})


def test_base_and_merged_models_on_cpu(tmp_path, tiny_model_path, monkeypatch):
    from rayft.serve.vllm_app import llm_config_dicts

    monkeypatch.delenv("RAYFT_API_KEYS", raising=False)
    configs = llm_config_dicts(_pipeline(tmp_path, model_name="base", merged_models=[
        {"name": "merged", "path": tiny_model_path}], vllm={"max_model_len": 256, "engine_kwargs": {"seed": 3}}))
    base, merged = configs
    assert base["model_loading_config"] == {"model_id": "base", "model_source": tiny_model_path}
    assert merged["model_loading_config"] == {"model_id": "merged", "model_source": tiny_model_path}
    for c in configs:
        assert c["accelerator_config"] == {"kind": "cpu"} and c["placement_group_config"] == {"bundles": [{"CPU": 1}]}
        assert c["runtime_env"] == {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}}
        assert c["engine_kwargs"]["max_model_len"] == 256 and c["engine_kwargs"]["seed"] == 3
        assert "lora_config" not in c and "enable_lora" not in c["engine_kwargs"]  # an empty local store
        assert c["deployment_config"] == {"max_ongoing_requests": 64, "num_replicas": 1,
                                          "ray_actor_options": {"num_cpus": 0}}


def test_adapters_come_from_an_object_store(tmp_path, monkeypatch):
    from rayft.serve.vllm_app import llm_config_dicts

    monkeypatch.delenv("RAYFT_API_KEYS", raising=False)
    base, = llm_config_dicts(_pipeline(tmp_path, adapter_store="s3://bucket/rayft-adapters/",
                                       vllm={"max_lora_rank": 32, "max_loras": 2}, replicas={"num_gpus": 1}))
    assert base["lora_config"] == {"dynamic_lora_loading_path": "s3://bucket/rayft-adapters/.latest",
                                   "max_num_adapters_per_replica": 16}
    engine = base["engine_kwargs"]
    assert engine["enable_lora"] and engine["max_lora_rank"] == 32 and engine["max_loras"] == 2
    assert base["placement_group_config"] == {"bundles": [{"GPU": 1, "CPU": 1}]} and "accelerator_config" not in base


def test_what_ray_serve_llm_cannot_do_is_an_error(tmp_path, monkeypatch):
    from rayft.serve.store import LocalAdapterStore
    from rayft.serve.vllm_app import llm_config_dicts

    monkeypatch.setenv("RAYFT_API_KEYS", "secret-key-123")
    with pytest.raises(ConfigError, match=r"serve.engine: vllm has no API keys .* \$RAYFT_API_KEYS is set"):
        llm_config_dicts(_pipeline(tmp_path))
    monkeypatch.delenv("RAYFT_API_KEYS")
    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8, "base_model_name_or_path": "x", "peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"0")
    try:
        LocalAdapterStore(tmp_path / "adapters").register(adapter, "orders")
    except Exception as exc:  # noqa: BLE001 - a store that validates weights: build a real adapter instead
        pytest.skip(f"cannot register a stub adapter: {exc}")
    with pytest.raises(ConfigError, match="serve.adapter_store: .* holds adapters, but Ray Serve LLM 2.60 loads"):
        llm_config_dicts(_pipeline(tmp_path))


def test_an_ia3_adapter_in_the_store_is_refused_naming_rayft_merge(tmp_path, monkeypatch):
    """vLLM cannot load IA3 (its adapter_config has no r / lora_alpha): refused when the app is built."""
    from rayft.serve.store import LocalAdapterStore
    from rayft.serve.vllm_app import llm_config_dicts

    monkeypatch.delenv("RAYFT_API_KEYS", raising=False)
    adapter = tmp_path / "ia3"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "IA3", "base_model_name_or_path": "x", '
                                                  '"target_modules": ["k_proj"], "feedforward_modules": []}')
    (adapter / "adapter_model.safetensors").write_bytes(b"0")
    try:
        LocalAdapterStore(tmp_path / "adapters").register(adapter, "orders-ia3")
    except Exception as exc:  # noqa: BLE001 - a store that validates weights: build a real adapter instead
        pytest.skip(f"cannot register a stub adapter: {exc}")
    with pytest.raises(ConfigError, match=r"orders-ia3 \(IA3\): vLLM loads plain LoRA adapters only; .*`rayft merge"):
        llm_config_dicts(_pipeline(tmp_path))


@pytest.mark.parametrize("serve, message", [
    ({"vllm": {}}, "vllm: only for `engine: vllm`"),
    ({"engine": "vllm", "batching": {"max_batch_size": 4}}, "batching: only rayft's engine reads these"),
    ({"engine": "vllm", "auth": {"api_keys": ["a-long-key-1"]}}, "auth: only rayft's engine reads these"),
    ({"engine": "vllm", "vllm": {"dtype": "int3"}}, "serve.vllm.dtype"),
    ({"engine": "vllm", "replicas": {"num_cpus": 0.5}}, "replicas.num_cpus: 0.5: vLLM's CPU engine runs on whole CPUs"),
])
def test_the_schema_refuses_the_other_engines_fields(serve, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate({"serve": serve})


def test_rayft_serve_without_vllm_says_how_to_get_it(tmp_path, monkeypatch):
    """In the main .venv (no vLLM) the app builder stops before starting anything, naming the fix."""
    from rayft.serve.app import build_app

    monkeypatch.delenv("RAYFT_API_KEYS", raising=False)
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed in this environment")
    args = {"model": {"name": "builtin:tiny-random"}, "serve": {"engine": "vllm", "adapter_store": str(tmp_path)}}
    with pytest.raises(ConfigError, match="needs vLLM and Ray Serve LLM.*make setup-vllm"):
        build_app(args)
