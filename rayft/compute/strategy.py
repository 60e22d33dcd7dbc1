"""Map `training.strategy` onto TrainingArguments: DeepSpeed ZeRO (a generated JSON config, or the
user's file) or FSDP2 (transformers' `fsdp` / `fsdp_config`); `ddp` needs nothing (Ray Train's
process group plus the Trainer's own DDP wrapping).

The generated DeepSpeed config leaves batch sizes, learning rate, clipping and precision as
`"auto"`, which transformers fills from the same TrainingArguments every other strategy uses, so a
run changes strategy without changing its numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from rayft.core.errors import ConfigError


def load_user_deepspeed_config(path: str | None, where: str = "training.deepspeed.config_file") -> dict | None:
    """Read the user's DeepSpeed JSON on the driver (workers on other nodes may not see the file)."""
    if not path:
        return None
    try:
        config = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: {path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(config, dict) or not isinstance(config.get("zero_optimization", {}), dict):
        raise ConfigError(f"{where}: {path}: expected a JSON object (a DeepSpeed config)")
    return config


def deepspeed_config(options: Any, on_gpu: bool) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO `options.stage` with the requested offloads; numbers left `auto`."""
    zero: dict[str, Any] = {
        "stage": options.stage,
        "overlap_comm": on_gpu,  # overlaps NCCL with compute; gloo on CPU gains nothing
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if options.stage >= 2:
        zero["allgather_bucket_size"] = 5e8
    if options.stage == 3:
        zero.update({
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            # Saving gathers the sharded weights into one 16-bit state dict on rank 0, so a ZeRO-3
            # run writes a standard PEFT adapter / HF model like the other strategies.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if options.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if options.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # the Trainer's torch AdamW (training.optim)
        "steps_per_print": 10**9,  # rayft prints its own progress lines
        "wall_clock_breakdown": False,
    }
    if options.offload_optimizer:
        # ZeRO-Offload steps the optimizer on the CPU: DeepSpeed's CPU Adam (a C++ op built on
        # first use), not the Trainer's torch optimizer, which DeepSpeed refuses with offload.
        config["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                          "weight_decay": "auto"}}
    return config


def fsdp_config(options: Any, checkpointing: bool = False) -> dict[str, Any]:
    """transformers' `fsdp_config` for FSDP2; FULL_STATE_DICT so saving writes standard files.
    `checkpointing` (training.gradient_checkpointing) becomes FSDP's own activation checkpointing:
    transformers refuses both at once, and the Trainer's would add an AllGather in backward."""
    config: dict[str, Any] = {
        "version": 2,
        "reshard_after_forward": options.sharding == "full_shard",
        "cpu_offload": options.cpu_offload,
        "activation_checkpointing": options.activation_checkpointing or checkpointing,
        "cpu_ram_efficient_loading": options.cpu_ram_efficient_loading,
        "state_dict_type": "FULL_STATE_DICT",
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
    }
    if options.wrap_layers:
        config["transformer_layer_cls_to_wrap"] = list(options.wrap_layers)
    return config


# `training.strategy` -> its TrainingArguments keywords: f(training, on_gpu, user_deepspeed) -> dict.
STRATEGIES: dict[str, Callable[[Any, bool, dict | None], dict[str, Any]]] = {}


def strategy(name: str):
    def wrap(fn: Callable[[Any, bool, dict | None], dict[str, Any]]):
        STRATEGIES[name] = fn
        return fn

    return wrap


def strategy_kwargs(training: Any, on_gpu: bool, user_deepspeed: dict | None = None) -> dict[str, Any]:
    """TrainingArguments keywords for the run's strategy (merged over rayft.compute.training_args' others)."""
    return STRATEGIES[training.strategy](training, on_gpu, user_deepspeed)


@strategy("ddp")
def _ddp(training: Any, on_gpu: bool, user_deepspeed: dict | None) -> dict[str, Any]:
    return {}  # Ray Train's process group plus the Trainer's own DDP wrapping


@strategy("deepspeed")
def _deepspeed(training: Any, on_gpu: bool, user_deepspeed: dict | None) -> dict[str, Any]:
    # use_cpu=True would make transformers skip DeepSpeed; on CPU workers DeepSpeed's own CPU
    # accelerator (DS_ACCELERATOR=cpu, set by the worker) places everything on the CPU.
    return {"deepspeed": user_deepspeed or deepspeed_config(training.deepspeed, on_gpu), "use_cpu": False}


@strategy("fsdp")
def _fsdp(training: Any, on_gpu: bool, user_deepspeed: dict | None) -> dict[str, Any]:
    return {"fsdp": True, "fsdp_config": fsdp_config(training.fsdp, training.gradient_checkpointing),
            "activation_checkpointing": False, "activation_checkpointing_kwargs": None}


def use_gloo_for_cpu_deepspeed(args: dict[str, Any], on_gpu: bool) -> dict[str, Any]:
    """DeepSpeed on CPU workers: set up accelerate's state on Ray's gloo process group first.

    Left to itself, accelerate picks no backend when DeepSpeed runs without CUDA, so it believes
    it has one process: "auto" batch sizes come out per worker instead of global (DeepSpeed then
    refuses them) and the data is not sharded. A state made with `backend="gloo"` (DeepSpeed's
    comm reuses the process group Ray Train already created) and reused through
    `accelerator_config.use_configured_state` counts the real world size. GPUs take the normal path.
    """
    if on_gpu or not args.get("deepspeed"):
        return args
    import os

    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    return {**args, "accelerator_config": {"use_configured_state": True}}


def zero_stage(args: dict[str, Any]) -> int:
    """The ZeRO stage in TrainingArguments keywords (0 when DeepSpeed is off)."""
    ds = args.get("deepspeed")
    return int((ds or {}).get("zero_optimization", {}).get("stage", 0)) if isinstance(ds, dict) else 0


def needs_collective_save(args: dict[str, Any]) -> bool:
    """Whether every worker must take part in saving (the weights are sharded across them)."""
    return zero_stage(args) == 3 or bool(args.get("fsdp"))


def strategy_in_effect(trainer: Any) -> str:
    """What the Trainer actually runs (recorded in summary.json): `deepspeed-zero<N>`, `fsdp2` when
    modules were really sharded with FSDP2, else `ddp` (or `single` for one worker)."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        return f"deepspeed-zero{trainer.accelerator.state.deepspeed_plugin.zero_stage}"
    if getattr(trainer, "is_fsdp_enabled", False):
        from torch.distributed.fsdp import FSDPModule

        sharded = any(isinstance(m, FSDPModule) for m in trainer.model_wrapped.modules())
        return "fsdp2" if sharded else "fsdp-not-applied"
    return "ddp" if trainer.args.world_size > 1 else "single"
