"""The `serve:` section of the config: what `rayft serve` and the Serve app builder deploy."""

from __future__ import annotations

import re

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rayft.schema.base import Strict

# Served model names and adapter ids: no slashes, no leading dot, so an id never names a path.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class MergedModelConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="The `model` name clients use for it.")
    path: str = Field(description="A Hugging Face model folder, e.g. written by `rayft merge` (relative paths: "
                      "against the current directory).")


class HttpConfig(Strict):
    host: str = Field("127.0.0.1", description="Address the HTTP proxy binds (`0.0.0.0` to accept remote clients).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of the proxy.")
    route_prefix: str = Field("/", pattern=r"^/", description="Path prefix of the app.")


class AuthConfig(Strict):
    api_keys: list[str] = Field(default_factory=list, description="Accepted API keys (`Authorization: Bearer "
                                "<key>`); prefer `api_keys_env` so keys stay out of the file.")
    api_keys_env: str | None = Field("RAYFT_API_KEYS", description="Environment variable holding more keys, "
                                     "comma-separated (read when the app is built).")

    @field_validator("api_keys")
    @classmethod
    def _no_blank_keys(cls, v: list[str]) -> list[str]:
        if any(len(k.strip()) < 8 for k in v):
            raise ValueError("every API key needs at least 8 characters")
        return v


class LimitsConfig(Strict):
    max_tokens: int = Field(512, ge=1, description="Largest `max_tokens` a request may ask for (400 above it).")
    default_max_tokens: int = Field(64, ge=1, description="`max_tokens` when a request gives none.")
    max_prompt_tokens: int = Field(2048, ge=1, description="Longest prompt, in tokens after the chat template (400 above it).")
    max_n: int = Field(4, ge=1, description="Largest `n` (choices per prompt).")
    max_prompts: int = Field(16, ge=1, description="Most prompts in one /v1/completions request (a list `prompt`).")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body (413 above it).")
    max_stop: int = Field(4, ge=0, description="Most `stop` strings.")


class BatchingConfig(Strict):
    enabled: bool = Field(True, description="Batch concurrent requests for the same model/adapter into one "
                          "`generate` call (`@serve.batch`); streaming requests are never batched.")
    max_batch_size: int = Field(16, ge=1, description="Most requests per batch.")
    batch_wait_timeout_s: float = Field(0.05, ge=0, description="How long a batch waits to fill up once the "
                                        "replica is free: about the clients' round trip (see docs/serving.md).")


class ReplicasConfig(Strict):
    num_replicas: int = Field(1, ge=1, description="Replicas of each model deployment (without autoscaling).")
    min_replicas: int | None = Field(None, ge=0, description="Autoscaling lower bound (autoscaling is on when "
                                     "`max_replicas` is set).")
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling upper bound; null: fixed `num_replicas`.")
    target_ongoing_requests: float = Field(4, gt=0, description="Autoscaling target of in-flight requests per replica.")
    max_ongoing_requests: int = Field(64, ge=1, description="In-flight requests one replica accepts (Serve queues the rest).")
    num_cpus: float = Field(1, ge=0, description="CPUs reserved per model replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per model replica (> 0: the model runs on CUDA).")
    torch_threads: int | None = Field(None, ge=1, description="torch threads per replica (default: num_cpus, at least 1).")
    ingress_replicas: int = Field(1, ge=1, description="Replicas of the HTTP ingress (FastAPI) deployment.")
    ingress_num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per ingress replica.")
    ingress_max_ongoing_requests: int = Field(
        256, ge=1, description="In-flight requests one ingress replica accepts. The ingress is async and only "
        "forwards, so this is high; Ray Serve's own default (5) would queue every request beyond the 5th in "
        "front of the ingress and starve the model replicas' batches.")

    @model_validator(mode="after")
    def _bounds(self) -> "ReplicasConfig":
        if self.max_replicas is not None and (self.min_replicas or 0) > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self

    def deployment_options(self) -> dict:
        """Serve `Deployment.options(...)` for a model deployment."""
        options = {"max_ongoing_requests": self.max_ongoing_requests,
                   "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}}
        if self.max_replicas is None:
            options["num_replicas"] = self.num_replicas
        else:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas if self.min_replicas is not None else 1,
                "max_replicas": self.max_replicas, "target_ongoing_requests": self.target_ongoing_requests}
        return options


# Object stores Ray Serve LLM (2.60) loads LoRA adapters from (its `lora_config.dynamic_lora_loading_path`).
VLLM_ADAPTER_SCHEMES = ("s3://", "gs://", "abfss://", "azure://")
# Sections of `serve` that only rayft's engine reads: refused with `engine: vllm` when set.
RAYFT_ENGINE_ONLY = ("batching", "auth", "limits", "max_adapters_per_replica")


class VllmConfig(Strict):
    """vLLM through Ray Serve LLM (`serve.engine: vllm`): what becomes each `LLMConfig`."""

    max_model_len: int = Field(2048, ge=16, description="Longest prompt + answer in tokens (vLLM's max_model_len).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="Weights / compute dtype.")
    max_lora_rank: int = Field(16, ge=1, description="At least the largest `adapter.r` of the served adapters.")
    max_loras: int = Field(4, ge=1, description="Adapters batched together in one engine step.")
    max_adapters_per_replica: int = Field(16, ge=1, description="Adapters a replica keeps loaded (LRU).")
    cpu_kv_cache_gib: int = Field(1, ge=1, description="On CPU: KV cache size in whole GiB (VLLM_CPU_KVCACHE_SPACE).")
    enforce_eager: bool = Field(True, description="No CUDA / torch.compile graphs: faster start, fine on CPU.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="More vLLM engine arguments, "
                                          "passed as they are (they win over the fields above).")


class ServeConfig(Strict):
    model_name: str | None = Field(None, pattern=NAME_PATTERN, description="Name clients use for the base model "
                                   "(default: derived from model.name, e.g. `smollm2-135m-instruct`).")
    adapter_store: str = Field("adapters", description="Adapter store that `rayft serve register` writes to; "
                               "every adapter in it is served by its id. A directory (or `file://` URI; relative "
                               "paths: against the current directory), or an object-store URI (`s3://bucket/path`, "
                               "`gs://...`, any fsspec filesystem whose package is installed on every node).")
    max_adapters_per_replica: int = Field(4, ge=1, description="Adapters a replica keeps loaded; the least "
                                          "recently used is evicted (`serve.multiplexed`).")
    merged_models: list[MergedModelConfig] = Field(default_factory=list, description="Merged models served "
                                                   "as their own deployments.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="The HTTP proxy (used by `rayft serve`).")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys; none configured: no auth.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request limits.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Dynamic batching.")
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig, description="Replicas, resources, autoscaling.")
    app_name: str = Field("rayft", pattern=NAME_PATTERN, description="Serve application name.")
    engine: Literal["rayft", "vllm"] = Field(
        "rayft", description="`rayft`: rayft's engine (HF generate, dynamic batching, per-request adapters, API "
        "keys and limits). `vllm`: vLLM through Ray Serve LLM (continuous batching, paged attention, batched "
        "multi-LoRA; needs vLLM installed: `make setup-vllm`).")
    vllm: VllmConfig | None = Field(None, description="Options of the vllm engine (only with `engine: vllm`).")

    @model_validator(mode="after")
    def _engine_fields(self) -> "ServeConfig":
        if self.engine == "rayft" and self.vllm is not None:
            raise ValueError("vllm: only for `engine: vllm` (this config serves on rayft's engine)")
        if self.engine == "vllm":
            # Compared with the defaults, not with the keys given: a dumped and re-validated config
            # (Serve app args, PBT, k8s render) carries every field at its default.
            given = [name for name in RAYFT_ENGINE_ONLY
                     if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True)]
            if given:
                raise ValueError(f"{', '.join(given)}: only rayft's engine reads these; with `engine: vllm` "
                                 "Ray Serve LLM's own ingress answers (no API keys or request limits: keep it "
                                 "behind a gateway) and vLLM batches continuously; see `vllm:` for its options")
            if self.vllm is None:
                self.vllm = VllmConfig()
            cpus = self.replicas.num_cpus
            if self.replicas.num_gpus == 0 and (cpus < 1 or cpus != int(cpus)):
                raise ValueError(f"replicas.num_cpus: {cpus:g}: vLLM's CPU engine runs on whole CPUs "
                                 "(its thread count is the replica's CPUs); use 1 or more")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> "ServeConfig":
        names = [m.name for m in self.merged_models] + ([self.model_name] if self.model_name else [])
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"merged_models: names must be unique and differ from model_name (repeated: {dupes})")
        return self

    @model_validator(mode="after")
    def _default_fits(self) -> "ServeConfig":
        if self.limits.default_max_tokens > self.limits.max_tokens:
            raise ValueError("limits.default_max_tokens must not exceed limits.max_tokens")
        return self


def default_model_name(model_name: str) -> str:
    """`builtin:smollm2-135m-instruct` -> `smollm2-135m-instruct`; `/x/my-model` -> `my-model`;
    `org/name` -> `name`, made to fit NAME_PATTERN."""
    tail = model_name.removeprefix("builtin:").rstrip("/").rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", tail).lstrip("._-")[:64]
    return cleaned or "base"
