"""The vLLM engines a `grpo` or `ppo` stage's rollouts run on (`generation.engine: vllm`, or `auto`
where vLLM is installed), started by the driver for the stage's lifetime; the training workers reach
them through their Ray actor handles (rayft.generation.rollouts). Refused before any engine or
worker starts, naming the field, where the engine cannot sample from the policy being trained."""

from __future__ import annotations

from typing import Any

from rayft.core.errors import UserError

ROLLOUT_STAGES = ("grpo", "ppo")


def rollout_engine(pipeline: Any, index: int) -> str:
    """`vllm` when stage `index` rolls out on vLLM engines, else `hf` (in the training workers)."""
    from rayft.generation.vllm_pool import chosen_engine

    if pipeline.stages[index].type not in ROLLOUT_STAGES or pipeline.generation.engine == "hf":
        return "hf"
    return chosen_engine(pipeline.generation)


def check_rollout_policy(pipeline: Any, index: int) -> None:
    """What vLLM rollouts need: a LoRA policy on an unquantized base (the engine samples from the
    base + the saved LoRA tensors) and no tokens added to the vocabulary. Checked when the run
    starts, before its first stage."""
    from rayft.models.tokens import new_token_ids
    from rayft.models.loader import resolve_model

    stage = pipeline.stages[index]
    why = None
    if pipeline.adapter.type != "lora":
        why = (f"adapter.type {pipeline.adapter.type}: only LoRA weights reach the engines each step "
               "(a full model or IA3 would need its whole weights sent)")
    elif pipeline.model.quantization is not None:
        why = ("model.quantization: the engines hold the unquantized base, so "
               "they would sample from another policy than the one trained")
    elif new_token_ids(resolve_model(pipeline.model.name, pipeline.model.revision), pipeline.model):
        why = "model.add_special_tokens: vLLM cannot add tokens to the base model's vocabulary"
    if why:
        raise UserError(f"generation.engine: stage '{stage.name}' ({stage.type}) cannot roll out on vLLM: {why}; "
                        "set generation.engine: hf")


def _check_room(pipeline: Any, index: int, generation: Any) -> None:
    """On a Ray started here: CPUs for the stage's workers and its engines together."""
    import ray

    need = generation.cpus_per_engine * generation.num_engines
    workers = pipeline.scaling.fewest_workers() * pipeline.scaling.resources_per_worker.get("CPU", 1)
    have = ray.cluster_resources().get("CPU", 0)
    if workers + need > have:
        raise UserError(f"generation.cpus_per_engine: stage '{pipeline.stages[index].name}' needs {workers:g} CPU(s) "
                        f"for its training workers and {need:g} for its vLLM engine(s), and the local Ray has "
                        f"{have:g}; lower generation.cpus_per_engine or scaling.num_workers, or set "
                        "generation.engine: hf")


def start_rollout_engines(pipeline: Any, index: int, model_path: str, local: bool) -> Any:
    """A VLLMPool (LoRA enabled at the policy's rank) for stage `index`'s rollouts, or None when the
    stage rolls out in its training workers (the policy was checked when the run started:
    check_rollout_policy). `local`: on a Ray started here for this run, which gets one engine and is
    checked for room. The caller closes the pool when the stage ends."""
    if rollout_engine(pipeline, index) != "vllm":
        return None
    from rayft.generation.vllm_pool import VLLMPool

    generation = pipeline.generation
    if local:
        if generation.num_engines == "auto":  # one engine: the rest of this machine trains
            generation = generation.model_copy(update={"num_engines": 1})
        _check_room(pipeline, index, generation)
    return VLLMPool(model_path, pipeline.model, generation, lora_rank=pipeline.adapter.r)
