"""Added special tokens: `model.add_special_tokens`, `model.pad_token` and the ChatML template's
tokens (`data.template: chatml`). One rule everywhere a tokenizer or model is loaded for a run,
so training, evaluation, merge and serving see the same token ids and embedding rows:

- the tokens are added to the tokenizer in the order the config lists them (an id is stable);
- a model whose embedding has fewer rows than the tokenizer has ids is resized (new rows start at
  the mean of the old ones, the same on every load);
- the ids the tokenizer did not have before are the rows a LoRA adapter trains and saves
  (PEFT's `trainable_token_indices`, tied output rows included), so base + adapter folder
  rebuild the trained model; a full fine-tune trains and saves the whole matrix anyway.

A saved adapter or model folder carries its tokenizer; loading an adapter onto a base resizes the
base to that tokenizer first (`fit_to_folder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
# ChatML as Qwen / SmolLM2 write it; prefix-stable, so prompt and answer separate turn by turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def wanted_tokens(model_cfg: Any) -> list[str]:
    """The tokens the config asks for, in order: `add_special_tokens`, then `pad_token`."""
    wanted = list(getattr(model_cfg, "add_special_tokens", None) or [])
    pad = getattr(model_cfg, "pad_token", None)
    if pad and pad not in wanted:
        wanted.append(pad)
    return wanted


def extend_tokenizer(tokenizer: Any, model_cfg: Any) -> list[int]:
    """Add the config's tokens to `tokenizer` (as special tokens: never split, never merged with
    text), set its pad token and, for ChatML tokens on a tokenizer with no chat template, the
    ChatML template. Returns the ids that are new to this tokenizer (empty when it had them all)."""
    wanted = wanted_tokens(model_cfg)
    if not wanted:
        return []
    before = len(tokenizer)
    missing = [t for t in wanted if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    pad = getattr(model_cfg, "pad_token", None)
    if pad:
        tokenizer.pad_token = pad
    if all(t in wanted for t in CHATML_TOKENS) and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    return list(range(before, len(tokenizer)))


def new_token_ids(base_path: str, model_cfg: Any) -> list[int]:
    """The ids the config's tokens get that the base tokenizer at `base_path` does not have: the
    embedding rows an adapter must train."""
    if not wanted_tokens(model_cfg):
        return []
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path, trust_remote_code=model_cfg.trust_remote_code)
    return extend_tokenizer(tokenizer, model_cfg)


def fit_embeddings(model: Any, vocab_size: int) -> bool:
    """Grow the input (and tied / output) embedding to `vocab_size` rows when it has fewer; True
    when it changed. Never shrinks: a model padded past its tokenizer keeps its rows.

    New rows start at the mean of the old ones (Hewitt's advice, and what transformers' mean
    resizing centres its samples on), deterministically: every load of the base makes the same
    rows, so an adapter saves only its trained deltas, not a copy of the whole embedding matrix."""
    import torch

    rows = model.get_input_embeddings().weight.shape[0]
    if vocab_size <= rows:
        return False
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    layers = [model.get_input_embeddings()]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not layers[0].weight:
        layers.append(output)
    with torch.no_grad():
        for layer in layers:
            weight = layer.weight
            weight[rows:] = weight[:rows].float().mean(dim=0).to(weight.dtype)
            bias = getattr(layer, "bias", None)
            if bias is not None and bias.shape[0] == vocab_size:
                bias[rows:] = bias[:rows].float().mean().to(bias.dtype)
    return True


def fit_to_config(model: Any, path: str, model_cfg: Any) -> Any:
    """`model` (loaded from `path`) with room for the config's added tokens."""
    if wanted_tokens(model_cfg):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
        extend_tokenizer(tokenizer, model_cfg)
        fit_embeddings(model, len(tokenizer))
        if getattr(model_cfg, "pad_token", None):
            model.config.pad_token_id = tokenizer.pad_token_id
    return model


def folder_vocab_size(folder: str | Path) -> int | None:
    """How many ids the tokenizer saved in an adapter / model folder has; None when it has none."""
    folder = Path(folder)
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    try:
        return len(AutoTokenizer.from_pretrained(str(folder)))
    except (OSError, ValueError):
        return None


def fit_to_folder(model: Any, folder: str | Path) -> Any:
    """Before loading the adapter saved in `folder` onto `model`: grow the embedding to the size of
    the tokenizer saved with the adapter (a run with added tokens), so its trained rows fit."""
    size = folder_vocab_size(folder)
    if size is not None:
        fit_embeddings(model, size)
    return model


def added_to_base(folder: str | Path, base_vocab_size: int) -> int:
    """How many ids the tokenizer saved in `folder` has beyond a base tokenizer of `base_vocab_size`."""
    size = folder_vocab_size(folder)
    return max(0, (size or 0) - base_vocab_size)


def trains_output_rows(model: Any) -> bool:
    """Whether `model`'s output layer carries PEFT trainable token rows (added tokens on a model whose
    output layer is tied to its input embedding)."""
    getter = getattr(model, "get_output_embeddings", None)
    output = getter() if getter else None
    return type(output).__name__ == "TrainableTokensWrapper"


# TRL 1.16's trainers that compute log-probabilities with a fused LM head reading `lm_head.bias`,
# which PEFT's trainable-token wrapper does not expose (SFT has its own way round: rayft.stages.sft).
FUSED_HEAD_STAGES = ("dpo", "kto", "grpo")


def check_fused_head(stage_type: str, model: Any) -> None:
    """Refuse, before training, a preference / GRPO stage whose model trains added-token output rows."""
    if stage_type in FUSED_HEAD_STAGES and trains_output_rows(model):
        from rayft.core.errors import ModelError

        raise ModelError(
            f"stages.{stage_type}: this stage cannot train the run's added tokens' rows on a model whose output "
            "layer is tied to its embedding (TRL's fused LM head reads `lm_head.bias`, which PEFT's trainable-token "
            "wrapper lacks). Merge the SFT stage (`rayft merge RUN --stage sft --out DIR`) and start this stage "
            "from DIR as model.name: the tokens are then part of the base")
