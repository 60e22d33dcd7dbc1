"""LoRA and IA3 adapters through PEFT, and loading a trained adapter back onto its base."""

from __future__ import annotations

from pathlib import Path

from rayft.schema.sections import AdapterConfig, ModelConfig
from rayft.core.errors import ModelError


def lora_config(cfg: AdapterConfig, task_type: str = "CAUSAL_LM", token_rows: list[int] | None = None):
    """The run's LoRA settings; `SEQ_CLS` (a reward model) also trains and saves the score head;
    `token_rows` (added tokens' ids) are embedding rows trained and saved with the adapter (PEFT's
    trainable tokens: only those rows, tied output rows included)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules, bias=cfg.bias, task_type=task_type,
        trainable_token_indices=list(token_rows) if token_rows else None,
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


def peft_config(cfg: AdapterConfig, task_type: str = "CAUSAL_LM", token_rows: list[int] | None = None):
    if cfg.type == "ia3":
        if token_rows:
            raise ModelError(f"adapter.type: ia3 cannot train the {len(token_rows)} added tokens' embedding rows "
                             "(PEFT's IA3 only scales activations, and untrained rows would be noise); use "
                             "adapter.type lora or full with model.add_special_tokens / data.template chatml")
        return ia3_config(cfg, task_type)
    return lora_config(cfg, task_type, token_rows)


def apply_adapter(model, cfg: AdapterConfig, task_type: str = "CAUSAL_LM", token_rows: list[int] | None = None):
    """Wrap `model` for training: a new (or `init_from`) LoRA or IA3 adapter, or the model as is (full).
    `token_rows`: the ids of tokens the run added (rayft.models.tokens.new_token_ids)."""
    if cfg.type == "full":
        return model
    from peft import PeftModel, get_peft_model

    from rayft.models.quantization import prepare_for_kbit_training

    model = prepare_for_kbit_training(model)  # QLoRA: a no-op for an unquantized base
    if cfg.init_from:
        from rayft.models.tokens import fit_to_folder

        return PeftModel.from_pretrained(fit_to_folder(model, cfg.init_from), cfg.init_from, is_trainable=True)
    config = peft_config(cfg, task_type, token_rows)
    try:
        return get_peft_model(model, config)
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

        from rayft.models.tokens import fit_to_folder

        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise ModelError(f"{adapter_dir}: not a PEFT adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(fit_to_folder(model, adapter_dir), str(adapter_dir))
    return model.eval()
