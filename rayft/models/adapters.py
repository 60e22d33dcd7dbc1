"""LoRA and IA3 adapters through PEFT, and loading a trained adapter back onto its base."""

from __future__ import annotations

from pathlib import Path

from rayft.schema.sections import AdapterConfig, ModelConfig
from rayft.core.errors import ModelError


def lora_config(cfg: AdapterConfig, task_type: str = "CAUSAL_LM"):
    """The run's LoRA settings; `SEQ_CLS` (a reward model) also trains and saves the score head."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules, bias=cfg.bias, task_type=task_type,
    )


def ia3_config(cfg: AdapterConfig, task_type: str = "CAUSAL_LM"):
    """IA3: `all-linear` (rayft's default target) means PEFT's per-architecture defaults, since IA3
    scales a few projections rather than adapting every linear layer."""
    from peft import IA3Config

    targets = None if cfg.target_modules == "all-linear" else list(cfg.target_modules)
    feedforward = cfg.feedforward_modules
    if targets is not None and feedforward is None:
        feedforward = [m for m in targets if m in ("down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2")]
    return IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type=task_type)


def peft_config(cfg: AdapterConfig, task_type: str = "CAUSAL_LM"):
    return ia3_config(cfg, task_type) if cfg.type == "ia3" else lora_config(cfg, task_type)


def apply_adapter(model, cfg: AdapterConfig, task_type: str = "CAUSAL_LM"):
    """Wrap `model` for training: a new (or `init_from`) LoRA or IA3 adapter, or the model as is (full)."""
    if cfg.type == "full":
        return model
    from peft import PeftModel, get_peft_model

    from rayft.models.quantization import prepare_for_kbit_training

    model = prepare_for_kbit_training(model)  # QLoRA: a no-op for an unquantized base
    if cfg.init_from:
        return PeftModel.from_pretrained(model, cfg.init_from, is_trainable=True)
    try:
        return get_peft_model(model, peft_config(cfg, task_type))
    except ValueError as exc:  # e.g. target_modules naming modules the model lacks
        raise ModelError(f"adapter.target_modules: {exc}") from None


def adapter_task(folder: str | Path) -> str | None:
    """The PEFT task type of a saved adapter folder (`CAUSAL_LM`, `SEQ_CLS`, ...), None when it is not one."""
    import json

    try:
        return str(json.loads((Path(folder) / "adapter_config.json").read_text()).get("task_type") or "") or None
    except (OSError, ValueError):
        return None


def adapter_kind(folder: str | Path) -> str | None:
    """The PEFT type of a saved adapter folder (`LORA`, `IA3`, ...), None when it is not one."""
    import json

    try:
        return str(json.loads((Path(folder) / "adapter_config.json").read_text()).get("peft_type") or "") or None
    except (OSError, ValueError):
        return None


def load_for_inference(base_path: str, model_cfg: ModelConfig, adapter_dir: str | Path | None = None,
                       on_gpu: bool = False):
    """The base model, with the adapter from `adapter_dir` applied if given, in eval mode."""
    from rayft.models.loader import load_causal_lm

    model = load_causal_lm(base_path, model_cfg, on_gpu)
    if adapter_dir is not None:
        from peft import PeftModel

        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise ModelError(f"{adapter_dir}: not a PEFT adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval()
