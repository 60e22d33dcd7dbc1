"""Config sections for scaling a run: the distributed strategy (`training.strategy`,
`training.deepspeed`, `training.fsdp`) and a quantized base for QLoRA (`model.quantization`),
plus `check_scaling`, which rejects combinations that cannot work before any worker starts.

Mapping these onto TrainingArguments lives in rayft.compute.strategy, loading a quantized model in
rayft.models.quantization.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rayft.schema.base import Strict


class DeepSpeedOptions(Strict):
    stage: Literal[1, 2, 3] = Field(2, description="ZeRO stage: 1 shards optimizer states, 2 also gradients, "
                                    "3 also the parameters.")
    offload_optimizer: bool = Field(False, description="Keep optimizer states (and the step) in CPU memory "
                                    "(ZeRO-Offload; DeepSpeed's CPU Adam replaces `training.optim`).")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory between uses (stage 3 only).")
    config_file: str | None = Field(
        None, description="A DeepSpeed JSON config used instead of the one rayft writes (relative paths: "
        "against the config file). `\"auto\"` values in it are filled from `training` by transformers.")


class FSDPOptions(Strict):
    sharding: Literal["full_shard", "shard_grad_op"] = Field(
        "full_shard", description="`full_shard`: parameters re-sharded after forward (least memory); "
        "`shard_grad_op`: kept gathered until backward (less communication).")
    cpu_offload: bool = Field(False, description="Offload parameters and gradients to CPU memory.")
    activation_checkpointing: bool = Field(
        False, description="FSDP's own activation checkpointing (use instead of training.gradient_checkpointing).")
    cpu_ram_efficient_loading: bool = Field(
        False, description="Load weights on rank 0 only and broadcast them (saves host memory on big models).")
    wrap_layers: list[str] | None = Field(
        None, description="Layer classes to shard as units, e.g. [LlamaDecoderLayer] (default: the model's own "
        "`_no_split_modules`).")


class QuantizationConfig(Strict):
    """A quantized, frozen base (bitsandbytes) under a trained LoRA adapter: QLoRA."""

    mode: Literal["4bit", "8bit"] = Field(description="`4bit` (QLoRA: NF4/FP4 weights) or `8bit` (LLM.int8).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (NormalFloat4 is QLoRA's).")
    double_quant: bool = Field(True, description="Also quantize the 4-bit quantization constants (saves ~0.4 "
                               "bits per parameter).")
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the de-quantized matmuls; `auto`: bfloat16 on GPU when supported, else float32.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw: Any) -> Any:
        """`quantization: 4bit` is short for `quantization: {mode: 4bit}`."""
        return {"mode": raw} if isinstance(raw, str) else raw


def check_scaling(pipeline: Any) -> str | None:
    """The first impossible combination of strategy / precision / quantization / adapter / stage,
    as a message naming the dotted field; None when the config can run. (What one stage type
    alone needs is checked by its own config class: `StageBase.check`.)"""
    quant = pipeline.model.quantization
    on_gpu = pipeline.scaling.use_gpu
    if quant is not None and pipeline.adapter.type == "full":
        return ("model.quantization: a quantized base is frozen; train a LoRA adapter on it (adapter.type: lora) "
                "or drop model.quantization for a full fine-tune")
    for i, stage in enumerate(pipeline.stages):
        # Name the field where the user set it: the top-level section unless the stage overrides it.
        problem = _check_stage(training_field(pipeline, i), stage.training, quant, on_gpu)
        if problem:
            return problem
        if pipeline.scaling.elastic:
            problem = _check_elastic(pipeline.scaling, training_field(pipeline, i), stage)
            if problem:
                return problem
    return None


# Stages with rayft's own loop split rollouts / generations per worker: their world size is fixed.
FIXED_WORLD_STAGES = ("ppo", "grpo")


def _check_elastic(scaling: Any, where: str, stage: Any) -> str | None:
    """An elastic worker range (scaling.min_workers) must keep the stage's global batch and resume
    its checkpoint on any worker count in the range."""
    low, high = scaling.min_workers, scaling.num_workers
    if stage.type in FIXED_WORLD_STAGES:
        return (f"scaling.min_workers: stage '{stage.name}' ({stage.type}) splits its rollouts per worker and "
                "keeps a fixed worker count; drop min_workers (or set it to num_workers)")
    t = stage.training
    if t.strategy != "ddp":
        return (f"scaling.min_workers: {where}.strategy is {t.strategy}: DeepSpeed ZeRO and FSDP save optimizer "
                "state sharded by the worker count, and resuming it on another count is not supported (DeepSpeed's "
                "universal checkpoints convert offline); elastic worker counts need strategy ddp")
    total = t.grad_accum * high
    uneven = [w for w in range(low, high + 1) if total % w]
    if uneven:
        fits = next(g for g in range(1, 10**6) if all((g * high) % w == 0 for w in range(low, high + 1)))
        return (f"scaling.min_workers: on {', '.join(map(str, uneven))} worker(s) the global batch ({t.batch_size} x "
                f"grad_accum {t.grad_accum} x {high} workers) cannot be kept with whole accumulation steps; set "
                f"{where}.grad_accum to {fits} (or a multiple), or a worker range whose counts all divide {total}")
    return None


def training_field(pipeline: Any, index: int) -> str:
    """Where the user set stage `index`'s training values: the top-level section unless the stage
    overrides it (errors name that field)."""
    return "training" if pipeline.stages[index].training == pipeline.training else f"stages.{index}.training"


def _check_stage(where: str, t: Any, quant: Any, on_gpu: bool) -> str | None:
    if t.precision in ("bf16", "fp16") and not on_gpu:
        return (f"{where}.precision: {t.precision} needs GPU workers (scaling.use_gpu: true); CPU workers train "
                "in fp32 (precision: auto or fp32)")
    ds = t.deepspeed
    if t.strategy != "deepspeed":
        for name in ("offload_optimizer", "offload_params", "config_file"):
            if name in ds.model_fields_set and getattr(ds, name):
                return f"{where}.deepspeed.{name}: only used with {where}.strategy: deepspeed (it is {t.strategy})"
    if t.strategy != "fsdp":
        for name in ("cpu_offload", "activation_checkpointing", "cpu_ram_efficient_loading"):
            if name in t.fsdp.model_fields_set and getattr(t.fsdp, name):
                return f"{where}.fsdp.{name}: only used with {where}.strategy: fsdp (it is {t.strategy})"
    if t.strategy == "deepspeed" and ds.offload_params and ds.stage != 3 and not ds.config_file:
        return (f"{where}.deepspeed.offload_params: DeepSpeed offloads parameters with ZeRO stage 3 only "
                f"(stage is {ds.stage}); set {where}.deepspeed.stage: 3 or use offload_optimizer")
    if quant is not None and t.strategy == "fsdp":
        return (f"{where}.strategy: fsdp cannot shard a bitsandbytes-quantized base (model.quantization: "
                f"{quant.mode}); use strategy ddp or deepspeed (stage 1/2) for QLoRA")
    if quant is not None and t.strategy == "deepspeed" and ds.stage == 3:
        return (f"{where}.deepspeed.stage: ZeRO-3 partitions the parameters, which a bitsandbytes-quantized base "
                f"(model.quantization: {quant.mode}) does not allow here; use stage 1 or 2 for QLoRA")
    if t.strategy == "fsdp" and not on_gpu:
        return (f"{where}.strategy: fsdp needs GPU workers (scaling.use_gpu: true): accelerate enables FSDP only "
                "for GPU-type devices, and on CPU workers the Trainer would silently train plain DDP "
                "(see docs/scaling.md); on CPU use ddp or deepspeed")
    return None
