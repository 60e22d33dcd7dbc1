"""A sequence classifier in use: `AutoModelForSequenceClassification` with the stage's labels (a
decoder such as the embedded model gets a score head, as the reward model does; an encoder folder
its own classification head), plus a PEFT `SEQ_CLS` adapter when one was trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rayft.core.errors import ModelError


def load_classifier(path: str, model_cfg: Any, names: Sequence[str], on_gpu: bool = False, seed: int = 0) -> Any:
    """The model at `path` with a `len(names)`-way head; a head the folder does not hold is initialised
    from `seed` (the base model's untrained head is a baseline, not a classifier)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from rayft.models.loader import load_tokenizer, torch_dtype

    torch.manual_seed(seed)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)}, dtype=torch_dtype(model_cfg, on_gpu),
            trust_remote_code=model_cfg.trust_remote_code, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name: cannot load a sequence-classification model from {path}: {exc}") from None
    from rayft.models.tokens import fit_to_config

    fit_to_config(model, path, model_cfg)
    if model.config.pad_token_id is None:  # decoders: the score is read at the last non-padding token
        model.config.pad_token_id = load_tokenizer(path, model_cfg.trust_remote_code, model_cfg).pad_token_id
    return model


def load_trained_classifier(base: str, output: Path, model_cfg: Any, names: Sequence[str], on_gpu: bool = False) -> Any:
    """A classify stage's output: an adapter folder on `base`, or a full model folder."""
    if (output / "adapter_config.json").is_file():
        from peft import PeftModel

        from rayft.models.tokens import fit_to_folder

        base_model = fit_to_folder(load_classifier(base, model_cfg, names, on_gpu), output)
        return PeftModel.from_pretrained(base_model, str(output)).eval()
    return load_classifier(str(output), model_cfg, names, on_gpu).eval()


def predict(model: Any, tokenizer: Any, rows: Any, batch_size: int = 16) -> list[int]:
    """Argmax labels of tokenized rows (input_ids, attention_mask), padded per batch."""
    import torch

    out: list[int] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(ids) for ids in chunk["input_ids"])
        ids = torch.full((len(chunk["input_ids"]), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(chunk["input_ids"]):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        out.extend(logits.argmax(-1).tolist())
    return out
