"""Tokenize rendered segments into `input_ids` + `labels`, with the loss on answers only.

Labels are -100 on prompt tokens unless `train_on_prompt`. EOS is appended to the last answer
(unless the template already ends it with EOS) so the tuned model learns to stop. Examples
longer than `max_length` are truncated on the configured side and counted; an example whose
answer is cut away entirely cannot teach anything and is dropped, also counted, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayft.data.templates import Segments

IGNORE_INDEX = -100


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def tokenize(segments: Segments, tokenizer: Any, *, max_length: int, truncation_side: str = "right",
             train_on_prompt: bool = False, add_eos: bool = True) -> Tokenized | None:
    """Token ids and labels for one example; None when truncation leaves no answer token."""
    input_ids: list[int] = []
    labels: list[int] = []
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        input_ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    for text, trainable in segments:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        labels.extend(ids if (trainable or train_on_prompt) else [IGNORE_INDEX] * len(ids))
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None and eos not in input_ids[-2:]:
        input_ids.append(eos)
        labels.append(eos)
    truncated = len(input_ids) > max_length
    if truncated:
        keep = slice(0, max_length) if truncation_side == "right" else slice(-max_length, None)
        input_ids, labels = input_ids[keep], labels[keep]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return Tokenized(input_ids, labels, truncated)
