"""`serve.engine: vllm`: the same config served by vLLM through Ray Serve LLM
(`ray.serve.llm.build_openai_app`): one `LLMConfig` for the base model, with rayft's adapter
store as its LoRA source when the store is an object store Ray Serve LLM reads (s3, gs, azure),
and one per merged model. Clients name an adapter `<model name>:<adapter id>` (Ray Serve LLM's
convention). vLLM is not in rayft's main environment: `make setup-vllm` builds `.venv-vllm`
(docs/serving.md has the versions that work together).
"""

from __future__ import annotations

import os
from typing import Any

from rayft.core.errors import ConfigError
from rayft.core.paths import absolute_path
from rayft.config.pipeline import Pipeline
from rayft.schema.serve import VLLM_ADAPTER_SCHEMES, default_model_name
from rayft.serve.adapter_ref import LATEST


def llm_config_dicts(pipeline: Pipeline, on_gpu: bool | None = None) -> list[dict[str, Any]]:
    """The `LLMConfig` arguments for the config's base model and merged models (plain dicts, so
    they can be checked and rendered without vLLM installed)."""
    from rayft.models.loader import resolve_model
    from rayft.serve.store import open_store

    cfg = pipeline.serve
    options = cfg.vllm
    assert options is not None  # filled in by the schema for engine: vllm
    if cfg.auth.api_keys_env and os.environ.get(cfg.auth.api_keys_env):
        raise ConfigError(f"serve.engine: vllm has no API keys (Ray Serve LLM's ingress answers every client), "
                          f"but ${cfg.auth.api_keys_env} is set: unset it, or serve on rayft's engine, or put a "
                          "gateway that checks keys in front")
    store = absolute_path(cfg.adapter_store)
    _refuse_non_lora(store, resolve_model(pipeline.model.name, pipeline.model.revision))
    lora = None
    if store.startswith(VLLM_ADAPTER_SCHEMES):
        # register() keeps each adapter's current version at <store>/.latest/<id>/, the layout Ray
        # Serve LLM loads `<model name>:<id>` from (rayft.serve.object_store).
        lora = {"dynamic_lora_loading_path": f"{store.rstrip('/')}/{LATEST}",
                "max_num_adapters_per_replica": options.max_adapters_per_replica}
    elif open_store(store).list_adapters():
        raise ConfigError(f"serve.adapter_store: {store} holds adapters, but Ray Serve LLM 2.60 loads LoRA adapters "
                          f"only from {', '.join(VLLM_ADAPTER_SCHEMES)} paths; sync the store there (e.g. `aws s3 "
                          "sync --follow-symlinks <store> s3://bucket/adapters`) and set adapter_store to it")
    gpu = bool(cfg.replicas.num_gpus) if on_gpu is None else on_gpu
    engine = {"max_model_len": options.max_model_len, "dtype": options.dtype, "enforce_eager": options.enforce_eager,
              "trust_remote_code": pipeline.model.trust_remote_code}
    if lora:
        engine.update(enable_lora=True, max_lora_rank=options.max_lora_rank, max_loras=options.max_loras)
    engine.update(options.engine_kwargs)
    # The replica's own actor takes no CPU: Ray Serve LLM adds it to the engine's placement bundle,
    # which carries serve.replicas.num_cpus (and num_gpus), so a replica costs what the config says.
    deployment: dict[str, Any] = {"max_ongoing_requests": cfg.replicas.max_ongoing_requests,
                                  "ray_actor_options": {"num_cpus": 0}}
    if cfg.replicas.max_replicas is None:
        deployment["num_replicas"] = cfg.replicas.num_replicas
    else:
        deployment["autoscaling_config"] = cfg.replicas.deployment_options()["autoscaling_config"]
    common: dict[str, Any] = {"engine_kwargs": engine, "deployment_config": deployment}
    if gpu:
        common["placement_group_config"] = {"bundles": [{"GPU": cfg.replicas.num_gpus, "CPU": cfg.replicas.num_cpus}]}
    else:
        common["accelerator_config"] = {"kind": "cpu"}
        common["placement_group_config"] = {"bundles": [{"CPU": cfg.replicas.num_cpus}]}
        common["runtime_env"] = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(options.cpu_kv_cache_gib)}}
    base_name = cfg.model_name or default_model_name(pipeline.model.name)
    configs = [{"model_loading_config": {"model_id": base_name,
                                         "model_source": resolve_model(pipeline.model.name, pipeline.model.revision)},
                **({"lora_config": lora} if lora else {}), **common}]
    for merged in cfg.merged_models:
        configs.append({"model_loading_config": {"model_id": merged.name,
                                                 "model_source": resolve_model(absolute_path(merged.path))},
                        **_without_lora(common)})
    return configs


def _refuse_non_lora(store: str, base_path: str) -> None:
    """vLLM loads plain LoRA adapters only: an IA3 adapter_config has no `r` / `lora_alpha`, and vLLM
    has no room for an adapter's added tokens (its trained embedding rows); Ray Serve LLM would fail
    on either at the first request that names it. Refuse them when the app is built, saying what
    works instead."""
    from transformers import AutoTokenizer

    from rayft.models.adapters import adapter_kind
    from rayft.models.tokens import added_to_base
    from rayft.serve.store import open_store

    try:
        opened = open_store(store)
        refs = opened.list_adapters()
        base_size = len(AutoTokenizer.from_pretrained(base_path)) if refs else 0
        other = sorted({(ref.id, kind) for ref in refs
                        for kind in [adapter_kind(opened.local_path(ref))] if kind not in (None, "LORA")})
        other += sorted({(ref.id, "added tokens") for ref in refs
                         if added_to_base(opened.local_path(ref), base_size)})
    except Exception:  # noqa: BLE001 - a remote store this machine cannot read; the replicas will meet it
        return
    if not other:
        return
    names = ", ".join(f"{adapter_id} ({kind})" for adapter_id, kind in other)
    raise ConfigError(f"serve.adapter_store: {names}: vLLM loads plain LoRA adapters only; fold each into its base "
                      f"with `rayft merge ADAPTER --out DIR` and list DIR under serve.merged_models, or serve "
                      f"them with serve.engine: rayft")


def _without_lora(common: dict[str, Any]) -> dict[str, Any]:
    engine = {k: v for k, v in common["engine_kwargs"].items() if k not in ("enable_lora", "max_lora_rank", "max_loras")}
    return {**common, "engine_kwargs": engine}


def build_vllm_application(pipeline: Pipeline) -> Any:
    """The Ray Serve LLM OpenAI app for the config (imports vLLM: run in `.venv-vllm`)."""
    try:
        from ray.serve.llm import LLMConfig, build_openai_app
    except ImportError as exc:
        raise ConfigError(f"serve.engine: vllm needs vLLM and Ray Serve LLM in this environment ({exc}); "
                          "run `make setup-vllm` and use .venv-vllm/bin/rayft") from None
    replicas = pipeline.serve.replicas
    return build_openai_app({
        "llm_configs": [LLMConfig(**c) for c in llm_config_dicts(pipeline)],
        # The ingress only forwards: as light as rayft's own (Serve's default of 1 CPU would not fit
        # beside a CPU engine on a 2-core machine).
        "ingress_deployment_config": {"num_replicas": replicas.ingress_replicas,
                                      "max_ongoing_requests": replicas.ingress_max_ongoing_requests,
                                      "ray_actor_options": {"num_cpus": replicas.ingress_num_cpus}}})
