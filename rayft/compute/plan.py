"""Peak memory per worker of each stage, estimated before a run from the config and the model's
shape (config.json: no weights are loaded), against the memory the workers will get.

The estimate, in bytes per worker, is the sum of:
- runtime: the worker process itself (Python, torch, transformers, TRL, PEFT, Ray), measured
  (bench/memory_plan.py);
- weights, gradients, optimizer states: rayft.compute.memory's accounting, ZeRO / FSDP sharding
  included; CPU workers train in fp32 without a master copy (4 + 4 + 8 bytes a trained parameter);
- activations of one micro-batch, what autograd keeps for backward: per token and decoder layer
  8h + 4f + 2kv + heads elements (h hidden, f MLP width, kv key/value width), measured for a Llama
  layer with saved-tensor hooks (tests/test_memory_plan.py measures it again); with LoRA 2h less
  (frozen norms) plus r per adapted module and, with dropout, 1.46 copies of each adapted input; with gradient checkpointing, one h per token and layer
  plus one layer recomputed in backward;
- on CPU, what glibc's heap keeps of the step's transient tensors (CPU_HEAP_RETAINED x the
  activations a forward without checkpointing keeps, with checkpointing or without);
- DeepSpeed ZeRO-3 on CPU workers: the whole model loaded (no zero.Init without an accelerator)
  plus the worker's flat fp32 partition of the trained weights;
- logits: tokens x vocabulary in fp32, three copies at the loss's backward (logits, log-softmax,
  their gradient), four for SFT (TRL's token accuracy and entropy); none for a reward model;
- a frozen reference copy where one is kept (a full fine-tune's DPO-family stage, PPO's `copy`);
- GRPO / PPO: the KV cache while generating, when it is larger than the training step (not with
  `generation.engine: vllm`: the engines generate, in their own processes).
Tokens per micro-batch: batch_size x max_length (the worst case: rows are padded to the longest in
the batch), twice that for pair stages (chosen and rejected in one forward), prompt + completion
for GRPO / PPO. `accelerate estimate-memory` and the ZeRO paper (Rajbhandari et al. 2020) count
the model state the same way; activations follow Korthikanti et al. 2022 for a Llama layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rayft.compute.memory import FULL_BYTES, GIB, LORA_BYTES, NF4_BYTES_DOUBLE_QUANT, SHARDED, ModelShape

RUNTIME_BYTES = {"cpu": 1.3 * GIB, "gpu": 0.6 * GIB}  # a worker before its model (CUDA context on a GPU)
# On CPU, glibc's malloc keeps on its heap part of what a training step allocates and frees: after
# the first free of a large block its dynamic mmap threshold rises (up to 32 MiB), so a decoder
# layer's tensors come from the heap from then on, where interleaved short- and long-lived tensors
# fragment it and freed space is not given back. The worker's high-water mark grows by a share of
# the activations a forward without checkpointing keeps, whether autograd keeps them (checkpointing
# off) or checkpointing frees and recomputes them. That share depends on the order of allocations:
# measured 0.10-0.65 on SmolLM2-135M + LoRA (bench/memory_strategies.py: SFT, reward, DPO, each
# with checkpointing on and off; decoder-only probes 0.47-0.65). 0.37 puts every measured case
# within 25% (docs/scaling.md, "Why a CPU worker holds more than autograd keeps").
CPU_HEAP_RETAINED = 0.37
LORA_DROPOUT_COPIES = 1.46  # elements kept per adapted input element with lora dropout > 0 (measured)
PAIR_STAGES = ("reward", "dpo", "orpo", "cpo")
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class MemoryPlan:
    stage: str
    device: str  # "cpu" | "gpu"
    parts: dict[str, float]  # bytes per worker
    limit: float | None  # what a worker can have, None where it cannot be known before the run
    limit_source: str
    knobs: list[tuple[str, float]] = field(default_factory=list)  # (settings, total they would give)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.limit is None or self.total <= self.limit

    def line(self) -> str:
        parts = ", ".join(f"{name} {gib(size)}" for name, size in self.parts.items() if size >= GIB / 200)
        limit = f" of {gib(self.limit)}" if self.limit is not None else ""
        return (f"stage '{self.stage}': about {gib(self.total)} per {self.device.upper()} worker{limit} "
                f"({self.limit_source}): {parts}")

    def refusal(self) -> str:
        tried = "\n".join(f"  {settings}  -> about {gib(total)}" for settings, total in self.knobs)
        return (f"stage '{self.stage}' needs about {gib(self.total)} per {self.device.upper()} worker, more than "
                f"the {gib(self.limit)} it can have ({self.limit_source}). Settings that make it smaller:\n{tried}\n"
                "(`rayft plan CONFIG` shows the estimate; --force runs it anyway)")


def gib(size: float | None) -> str:
    return "unknown" if size is None else f"{size / GIB:.1f} GiB"


def plan_stage(pipeline: Any, index: int, shape: ModelShape, limit: float | None = None,
               limit_source: str = "not checked", longest: int | None = None, with_knobs: bool = True) -> MemoryPlan:
    """`longest`: the longest training row in tokens, where the data is prepared (the batch that holds
    it is the largest: rows are padded to the longest in their batch); else data.max_length."""
    stage = pipeline.stages[index]
    on_gpu = pipeline.scaling.use_gpu
    device = "gpu" if on_gpu else "cpu"
    parts = {"runtime": RUNTIME_BYTES[device],
             **model_state(shape, pipeline, stage, on_gpu, pipeline.scaling.num_workers)}
    parts.update(step_memory(shape, pipeline, stage, on_gpu, longest))
    plan = MemoryPlan(stage.name, device, parts, limit, limit_source)
    if with_knobs:
        plan.knobs = [(text, plan_stage(changed, index, shape, longest=_clip(longest, changed.stages[index]),
                                        with_knobs=False).total)
                      for text, changed in smaller_settings(pipeline, index)]
    return plan


def model_state(shape: ModelShape, pipeline: Any, stage: Any, on_gpu: bool, workers: int) -> dict[str, float]:
    """Weights, gradients and optimizer states per worker (and a frozen reference copy)."""
    adapter, quant, training = pipeline.adapter, pipeline.model.quantization, stage.training
    weight_bytes = _dtype_bytes(pipeline.model.dtype, on_gpu)
    if adapter.type == "full":
        trained = shape.params()
        per = FULL_BYTES if on_gpu else {"weights": 4.0, "grads": 4.0, "optimizer": 8.0}
        parts = {k: trained * b for k, b in per.items()}
        if not on_gpu:
            parts["weights"] = trained * weight_bytes
    else:
        trained = lora_params(shape, adapter.r, adapter.target_modules)
        parts = {k: trained * b for k, b in LORA_BYTES.items()}
        if quant is not None and quant.mode == "4bit":
            parts["weights"] += shape.linear_params() * NF4_BYTES_DOUBLE_QUANT + shape.other_params() * weight_bytes
        elif quant is not None:  # 8-bit
            parts["weights"] += shape.linear_params() * 1.0 + shape.other_params() * weight_bytes
        else:
            parts["weights"] += shape.params() * weight_bytes
    sharding = _sharding(training)
    for key in SHARDED[sharding]:
        parts[key] /= workers
    if sharding == "zero3" and not on_gpu and training.strategy == "deepspeed":
        # No zero.Init without an accelerator: every CPU worker loads the whole model before DeepSpeed
        # partitions it, and keeps its fp32 partition of the trained weights as a flat buffer.
        parts["weights"] *= workers
        parts["flat_partition"] = trained * 4.0 / workers
    if on_gpu and training.strategy == "deepspeed":
        if training.deepspeed.offload_optimizer:
            parts["optimizer"] = 0.0  # kept in host memory
        if training.deepspeed.offload_params:
            parts["weights"] = 0.0
    reference = getattr(stage, "reference", None) == "copy" or (
        adapter.type == "full" and stage.type in ("dpo", "kto", "ppo", "grpo"))
    if reference:
        parts["reference"] = shape.params() * weight_bytes
    return parts


def step_memory(shape: ModelShape, pipeline: Any, stage: Any, on_gpu: bool,
                longest: int | None = None) -> dict[str, float]:
    """Activations and logits of one micro-batch (or the KV cache while generating, if larger)."""
    sequences, length, copies, generated = micro_batch(stage, longest)
    tokens = sequences * length
    act_bytes = 2 if on_gpu and stage.training.precision != "fp32" else 4
    per_layer = layer_elements(shape, pipeline.adapter, pipeline.model.attn_implementation, length)
    if stage.training.gradient_checkpointing:
        kept = shape.layers * shape.hidden + per_layer  # each layer's input, one layer recomputed
    else:
        kept = shape.layers * per_layer
    activations = tokens * (kept + 2 * shape.hidden) * act_bytes
    retained = 0.0 if on_gpu else CPU_HEAP_RETAINED * tokens * shape.layers * per_layer * act_bytes
    logits = tokens * shape.vocab * 4.0 * copies
    if generated and pipeline.generation.engine != "vllm":  # on vLLM the engines hold the KV cache
        cache = 2 * shape.layers * shape.kv_dim * tokens * act_bytes + sequences * shape.vocab * 4.0
        if cache > activations + logits:
            return {"kv_cache": cache}
    parts = {"activations": activations, "logits": logits}
    if retained:
        parts["cpu_allocator_retained"] = retained
    return parts


def micro_batch(stage: Any, longest: int | None = None) -> tuple[int, int, int, int]:
    """(sequences, tokens each, logits copies, tokens generated) of one training micro-batch."""
    batch, length = stage.training.batch_size, _clip(longest, stage) or stage.data.max_length
    if stage.type == "sft":
        return batch, length, 4, 0
    if stage.type == "reward":
        return 2 * batch, length, 0, 0
    if stage.type in PAIR_STAGES:
        return 2 * batch, length, 3, 0
    if stage.type == "grpo":
        return batch, length + stage.max_completion_length, 3, stage.max_completion_length
    if stage.type == "ppo":
        return batch, length + stage.max_new_tokens, 3, stage.max_new_tokens
    return batch, length, 3, 0


def layer_elements(shape: ModelShape, adapter: Any, attention: str, length: int) -> float:
    """Elements autograd keeps per token in one decoder layer (fp32 or bf16 alike)."""
    h, f, kv = shape.hidden, shape.intermediate, shape.kv_dim
    elements = 8 * h + 4 * f + 2 * kv + shape.heads
    if attention == "eager":  # the attention probabilities, heads x length per token
        elements += shape.heads * length
    if adapter.type != "full":  # the frozen norms keep nothing for their weights; each adapter keeps r
        inputs = dict(zip(MODULES, (h, h, h, h, h, h, f)))
        adapted = [m for m in MODULES if adapter.target_modules == "all-linear" or m in adapter.target_modules]
        elements += adapter.r * len(adapted) - 2 * h
        if adapter.dropout > 0:
            elements += LORA_DROPOUT_COPIES * sum(inputs[m] for m in adapted)
    return elements


def lora_params(shape: ModelShape, r: int, targets: Any) -> int:
    h, f, kv = shape.hidden, shape.intermediate, shape.kv_dim
    sizes = dict(zip(MODULES, ((h, h), (h, kv), (h, kv), (h, h), (h, f), (h, f), (f, h))))
    chosen = [m for m in MODULES if targets == "all-linear" or m in targets] or list(MODULES)
    return shape.layers * sum(r * (sizes[m][0] + sizes[m][1]) for m in chosen)


def smaller_settings(pipeline: Any, index: int) -> list[tuple[str, Any]]:
    """(what to set, the config with it set) for each knob that makes stage `index` smaller. The
    copies are for estimating only (not validated again): a knob is offered where the config allows it."""
    stage = pipeline.stages[index]
    training, data, scaling, adapter = stage.training, stage.data, pipeline.scaling, pipeline.adapter
    found: list[tuple[str, Any]] = []

    def offer(text: str, training_update=None, data_update=None, **sections: Any) -> None:
        changed = stage.model_copy(update={"training": training.model_copy(update=training_update or {}),
                                           "data": data.model_copy(update=data_update or {})})
        stages = [*pipeline.stages[:index], changed, *pipeline.stages[index + 1:]]
        updates = {name: getattr(pipeline, name).model_copy(update=values) for name, values in sections.items()}
        found.append((text, pipeline.model_copy(update={"stages": stages, **updates})))

    if not training.gradient_checkpointing:
        offer("training.gradient_checkpointing: true", {"gradient_checkpointing": True})
    if training.batch_size > 1:
        half = training.batch_size // 2
        offer(f"training.batch_size: {half} with training.grad_accum: {training.grad_accum * 2} (the same global "
              "batch)", {"batch_size": half, "grad_accum": training.grad_accum * 2})
    if data.max_length > 64:
        offer(f"data.max_length: {data.max_length // 2}", data_update={"max_length": data.max_length // 2})
    if adapter.type == "full":
        offer("adapter.type: lora", adapter={"type": "lora"})
    if scaling.use_gpu and training.strategy == "ddp":
        offer("training.strategy: deepspeed with training.deepspeed.stage: 3 (shards weights, gradients and "
              "optimizer states)", {"strategy": "deepspeed",
                                    "deepspeed": training.deepspeed.model_copy(update={"stage": 3})})
    if scaling.use_gpu and adapter.type != "full" and pipeline.model.quantization is None:
        from rayft.schema.scaling import QuantizationConfig

        offer("model.quantization: 4bit (QLoRA)", model={"quantization": QuantizationConfig(mode="4bit")})
    if not scaling.use_gpu and scaling.num_workers > 1:
        offer(f"scaling.num_workers: {scaling.num_workers // 2} (CPU workers on one node share its memory)",
              scaling={"num_workers": scaling.num_workers // 2})
    return found


def worker_limit(scaling: Any, address: str | None) -> tuple[float | None, str]:
    """What one worker can have: a GPU's memory, or this machine's free memory (below Ray's memory
    monitor's kill threshold) shared by the workers; unknown on a cluster before the run."""
    if address or os.environ.get("RAY_ADDRESS"):
        return None, "on a cluster: checked against nothing before the run"
    if scaling.use_gpu:
        try:
            import torch

            if torch.cuda.is_available():
                return float(torch.cuda.get_device_properties(0).total_memory), "GPU 0's memory"
        except Exception:  # noqa: BLE001
            pass
        return None, "no GPU on this machine to check against"
    import psutil

    memory = psutil.virtual_memory()
    threshold = float(os.environ.get("RAY_memory_usage_threshold", "0.95"))
    usable = max(0.0, memory.total * threshold - (memory.total - memory.available))
    workers = scaling.num_workers
    return usable / workers, (f"this machine's free memory up to Ray's kill threshold ({threshold:.0%}), "
                              f"shared by {workers} worker{'s' * (workers > 1)}")


def model_shape(model_path: str, trust_remote_code: bool = False) -> ModelShape:
    """The model's sizes from its config.json (no weights loaded)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    return ModelShape.from_hf_config(config, name=str(model_path))


def longest_row(data: Any) -> int | None:
    """The longest training row of prepared data in tokens: SFT rows' input_ids, preference pairs'
    prompt + longer answer (from their stats); None where not known (prompts: max_length)."""
    train = data.train
    if train is not None and "input_ids" in train.column_names and len(train):
        return max(len(ids) for ids in train["input_ids"])
    return (data.stats.get("train") or {}).get("longest") or None


def _clip(longest: int | None, stage: Any) -> int | None:
    return None if longest is None else min(longest, stage.data.max_length)


def _sharding(training: Any) -> str:
    if training.strategy == "deepspeed":
        return f"zero{training.deepspeed.stage}" if f"zero{training.deepspeed.stage}" in SHARDED else "ddp"
    if training.strategy == "fsdp":
        return "zero3" if training.fsdp.sharding == "full_shard" else "zero2"
    return "ddp"


def _dtype_bytes(dtype: str, on_gpu: bool) -> float:
    if dtype == "auto":
        return 2.0 if on_gpu else 4.0
    return 4.0 if dtype == "float32" else 2.0
