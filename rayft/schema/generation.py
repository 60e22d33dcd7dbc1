"""`generation`: which engine writes text outside the Serve app -- evaluation's answers, a dpo
stage's on-policy pairs, `rayft data preference` and `rayft data generate` (docs/generation.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rayft.schema.base import Strict, compile_regex


class SelfInstructConfig(Strict):
    num_instructions: int = Field(100, ge=1, description="New instructions the teacher writes before it answers them.")
    examples_per_prompt: int = Field(3, ge=1, le=20, description="Seed instructions shown in each request for a "
                                     "new one (drawn at random, seeded).")
    max_new_tokens: int = Field(96, ge=8, description="Length limit of a new instruction.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of new instructions.")


class TeacherConfig(Strict):
    model: str | None = Field(None, description="The teacher: `builtin:<name>` or a local model folder (default: "
                              "the config's model.name); ignored with `endpoint`.")
    adapter: str | None = Field(None, description="A LoRA adapter folder on the teacher model.")
    endpoint: str | None = Field(None, description="An OpenAI-compatible API instead of a local model (`rayft "
                                 "serve`, vLLM, ...): its base URL, e.g. http://127.0.0.1:8000/v1.")
    endpoint_model: str | None = Field(None, description="The model name the endpoint serves (with endpoint).")
    api_key_env: str | None = Field(None, description="Environment variable holding the endpoint's API key.")
    prompts: str | None = Field(None, description="Instructions to answer: a .jsonl file (`prompt`, `instruction` "
                                "or `question` per row) or text, one per line. Default: the questions of the "
                                "config's data rows (their answers are not used).")
    self_instruct: SelfInstructConfig | None = Field(None, description="First write new instructions from the "
                                                     "prompts as seed examples (self-instruct), then answer those.")
    system: str | None = Field(None, description="System message given to the teacher with every instruction.")
    max_new_tokens: int = Field(256, ge=1, description="Length limit of an answer; an answer cut there is dropped.")
    temperature: float = Field(0.0, ge=0, description="0: greedy answers; above 0: sampled, seeded per row.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (with temperature > 0).")
    seed: int = Field(0, description="Seed of the sampling and of the self-instruct examples drawn.")
    stop: list[str] = Field(default_factory=list, description="Stop strings: an answer ends before the first "
                            "(e.g. `\n\nUser:`); an answer that reached one is not counted as cut.")
    answer_pattern: str | None = Field(None, description="A regex every kept answer must match (re.search), e.g. "
                                       "`^\\{.*\\}$` for JSON answers; the others are dropped as not in the asked format.")
    chunk_rows: int = Field(32, ge=1, description="Rows generated and saved together: a killed run redoes at most one "
                            "chunk.")
    concurrency: int = Field(8, ge=1, description="Requests in flight to an endpoint.")

    @field_validator("answer_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)
        return value

    @model_validator(mode="after")
    def _endpoint_names_its_model(self) -> TeacherConfig:
        if self.endpoint and not self.endpoint_model:
            raise ValueError("endpoint: name the model it serves in endpoint_model")
        if self.endpoint and (self.model or self.adapter):
            raise ValueError("endpoint: a teacher is either an endpoint or a local model (model / adapter), not both")
        return self


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
    cpu_kv_cache_gib: int = Field(2, ge=1, description="On CPU: the KV cache of each engine in whole GiB "
                                  "(VLLM_CPU_KVCACHE_SPACE); seeded samples go in waves that fit it.")
    max_loras: int = Field(4, ge=1, description="Adapters one engine holds at once.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="More vLLM engine arguments, passed "
                                          "as they are (they win over the fields above).")
    teacher: TeacherConfig | None = Field(None, description="`rayft data generate`: the teacher model that writes "
                                          "training data (docs/generation.md).")
