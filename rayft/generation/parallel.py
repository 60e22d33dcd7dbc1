"""Generation for evaluation, in this process or spread over Ray workers (`eval.num_workers`).

With N workers the prompts are dealt round-robin into N shards, each shard is answered by a Ray
task that loads the model itself, and the answers are put back in the original order. Large
held-out sets then take about 1/N of the time on N CPUs (or GPUs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayft.generation.hf import Generation, generate


def generate_answers(label: str, model_path: str, adapter: Path | None, model_cfg: Any, tokenizer: Any,
                     prompts: list[str], eval_cfg: Any, model: Any = None) -> list[Generation]:
    """`model`: the already loaded model, used when generating in this process."""
    workers = min(eval_cfg.num_workers, len(prompts)) or 1
    where = "in this process" if workers == 1 else f"on {workers} Ray workers"
    print(f"rayft: generating {len(prompts)} answers with {label} {where} ...", flush=True)
    options = _decoding(eval_cfg)
    if workers == 1:
        if model is not None:
            return generate(model, tokenizer, prompts, **options)
        return _answer_shard(model_path, adapter, model_cfg, tokenizer, prompts, options)
    import logging

    import ray

    if not ray.is_initialized():  # `rayft eval` alone; after `rayft train` the run's Ray is reused
        ray.init(logging_level=logging.WARNING)
    threads = max(1, (ray.cluster_resources().get("CPU", 1) // workers))
    task = ray.remote(num_cpus=1)(_answer_shard_task)
    shards = [list(range(i, len(prompts), workers)) for i in range(workers)]
    refs = [task.remote(model_path, str(adapter) if adapter else None, model_cfg.model_dump(), tokenizer,
                        [prompts[i] for i in shard], options, int(threads)) for shard in shards]
    answers: list[Generation | None] = [None] * len(prompts)
    for shard, result in zip(shards, ray.get(refs)):
        for index, gen in zip(shard, result):
            answers[index] = gen
    return answers  # type: ignore[return-value]


def decoding(eval_cfg: Any) -> dict[str, Any]:
    """The `eval` section's decoding settings, as both engines take them."""
    return {"max_new_tokens": eval_cfg.max_new_tokens, "do_sample": eval_cfg.do_sample,
            "temperature": eval_cfg.temperature, "top_p": eval_cfg.top_p}


def _decoding(eval_cfg: Any) -> dict[str, Any]:
    return {**decoding(eval_cfg), "batch_size": eval_cfg.batch_size}


def _answer_shard(model_path: str, adapter: Path | str | None, model_cfg: Any, tokenizer: Any,
                  prompts: list[str], options: dict[str, Any]) -> list[Generation]:
    import torch

    from rayft.models.adapters import load_for_inference

    model = load_for_inference(model_path, model_cfg, adapter, on_gpu=torch.cuda.is_available())
    return generate(model, tokenizer, prompts, **options)


def _answer_shard_task(model_path: str, adapter: str | None, model_cfg: dict, tokenizer: Any, prompts: list[str],
                       options: dict[str, Any], threads: int) -> list[Generation]:
    import torch

    from rayft.schema.sections import ModelConfig

    torch.set_num_threads(threads)
    return _answer_shard(model_path, adapter, ModelConfig.model_validate(model_cfg), tokenizer, prompts, options)
