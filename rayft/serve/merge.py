"""`rayft merge`: fold a LoRA or IA3 adapter into its base (PEFT `merge_and_unload`) and save a standard
Hugging Face model folder (weights, tokenizer, generation config) that any HF tool, vLLM, or
`serve.merged_models` can load without PEFT."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from rayft.core.errors import UserError
from rayft.serve.store import find_adapter
from rayft.core.publish import staged_folder

MERGE_META = "rayft-merged.json"


def base_model_for(adapter_dir: Path) -> str:
    """The run's `model.name` (from the stage's or run's config.yaml), else the adapter's own record."""
    for config in (adapter_dir.parent / "config.yaml", adapter_dir.parent.parent / "config.yaml"):
        try:
            name = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("name")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if name:
            return name
    try:
        name = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        name = None
    if not name:
        raise UserError(f"{adapter_dir}: cannot tell the base model; pass --base MODEL")
    return name


def merge_adapter(source: str | Path, out: str | Path, base: str | None = None, stage: str | None = None,
                  force: bool = False) -> Path:
    """Merge the adapter of `source` (a run, stage or adapter folder) into its base; write `out`."""
    import torch
    from peft import PeftModel

    from rayft.schema.sections import ModelConfig
    from rayft.models.loader import load_causal_lm, load_tokenizer, resolve_model

    adapter = find_adapter(source, stage)
    out = Path(out).expanduser().absolute()
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out}: exists and is not empty (pass --force to replace it)")
    base_name = base or base_model_for(adapter)
    base_path = resolve_model(base_name)
    from rayft.models.tokens import fit_to_folder, folder_vocab_size

    model = fit_to_folder(load_causal_lm(base_path, ModelConfig(name=base_path, dtype="float32")), adapter)
    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"{adapter}: cannot apply it to base '{base_name}': {exc}") from None
    with staged_folder(out) as staging:
        with torch.no_grad():
            merged.save_pretrained(staging, safe_serialization=True)
        # The adapter's own tokenizer when it has one (a run's added tokens, ChatML), else the base's.
        load_tokenizer(str(adapter) if folder_vocab_size(adapter) else base_path).save_pretrained(staging)
        (staging / MERGE_META).write_text(json.dumps(
            {"adapter": str(adapter.resolve()), "base": base_name, "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            indent=2) + "\n")
    return out
