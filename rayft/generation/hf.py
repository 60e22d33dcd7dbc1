"""Batched generation for evaluation: prompts sorted by length, left-padded, decoded answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Generation:
    text: str
    new_tokens: int
    hit_max_tokens: bool  # stopped by max_new_tokens, not by EOS


def generate(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int = 64,
             batch_size: int = 16, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             on_batch: Callable[[int], None] | None = None) -> list[Generation]:
    """Answers for `prompts` (already templated), in the order given."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Generation | None] = [None] * len(prompts)
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    add_bos = tokenizer.bos_token is not None and getattr(tokenizer, "add_bos_token", False)
    stops = eos_ids(model, tokenizer)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            texts = [(tokenizer.bos_token if add_bos else "") + prompts[i] for i in chunk]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            with torch.inference_mode():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=stops, **sampling)
            for row, index in enumerate(chunk):
                new = out[row, batch["input_ids"].shape[1]:].tolist()
                ended = next((k for k, t in enumerate(new) if t in stops), None)
                kept = new if ended is None else new[:ended]
                results[index] = Generation(tokenizer.decode(kept, skip_special_tokens=True).strip(),
                                            len(kept), ended is None and len(new) >= max_new_tokens)
            if on_batch:
                on_batch(len(chunk))
    finally:
        tokenizer.padding_side = previous_side
    return results  # type: ignore[return-value]


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokens that end an answer: the tokenizer's EOS and the model's generation config's."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)
