"""`generation`: which engine writes text outside the Serve app -- evaluation's answers, a dpo
stage's on-policy pairs, `rayft data preference` and `rayft data generate` (docs/generation.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rayft.schema.base import Strict


class GenerationConfig(Strict):
    engine: Literal["hf", "vllm", "auto"] = Field(
        "hf", description="`hf`: Hugging Face generate in rayft's own process or Ray tasks (eval.num_workers); "
        "`vllm`: vLLM engines in Ray actors spread over the cluster's nodes (an error when vLLM is not "
        "installed); `auto`: vllm where it is installed, else hf. Which to pick when: docs/generation.md.")
    vllm_python: str | None = Field(
        None, description="The Python of an environment with vLLM (`make setup-vllm` builds .venv-vllm): the "
        "engine actors run there (Ray's runtime_env py_executable). Default: this Python if it imports vllm, "
        "else $RAYFT_VLLM_PYTHON, else .venv-vllm/bin/python beside rayft's checkout.")
    num_engines: int | Literal["auto"] = Field(
        "auto", description="vLLM engine actors; prompts are dealt among them. `auto`: one per alive node that "
        "has cpus_per_engine CPUs (gpus_per_engine GPUs) free.")
    cpus_per_engine: float = Field(1, gt=0, description="CPUs per engine actor (on CPU nodes also its threads).")
    gpus_per_engine: float = Field(0, ge=0, description="GPUs per engine actor (0 on CPU-only clusters).")
    max_model_len: int = Field(2048, ge=16, description="vLLM's context limit: prompt plus answer tokens.")
    dtype: str = Field("auto", description="vLLM weight dtype; `auto` is float32 on CPU (as rayft's own "
                       "engine, so both engines agree) and the model's own on GPU.")
    memory_utilization: float = Field(0.5, gt=0, le=1, description="vLLM's gpu_memory_utilization on GPU (the "
                                      "share of the GPU it may hold).")
    cpu_kv_cache_gib: int = Field(1, ge=1, description="On CPU: the KV cache in whole GiB (VLLM_CPU_KVCACHE_SPACE).")
    max_loras: int = Field(4, ge=1, description="Adapters one engine holds at once.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="More vLLM engine arguments, passed "
                                          "as they are (they win over the fields above).")
