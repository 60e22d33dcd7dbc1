"""Packing: several examples per row, without cross-contamination.

Examples are placed into rows of at most `max_length` tokens by best-fit decreasing (few, full
rows). In a packed row every example gets positions restarting at 0 and a block-diagonal causal
attention mask, so no token attends to another example. On CPU (sdpa / eager attention)
transformers does NOT isolate examples from restarted `position_ids` alone, so the collator
builds the explicit 4-D mask; see docs/architecture.md. The first label of each example is -100
so the end of one example is never trained to predict the start of the next.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from rayft.data.tokenize import IGNORE_INDEX


def pack_examples(items: list[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """Rows of `input_ids`, `labels`, `seq_lengths` (the lengths of the examples inside)."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i]["input_ids"]))
    bins: list[list[int]] = []  # example indices per row
    free: list[tuple[int, int]] = []  # (space left, row index), kept sorted for best fit
    for i in order:
        size = len(items[i]["input_ids"])
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            space, row = free.pop(slot)
            bins[row].append(i)
            bisect.insort(free, (space - size, row))
        else:
            bins.append([i])
            bisect.insort(free, (max_length - size, len(bins) - 1))
    packed = []
    for members in bins:
        members.sort()  # original order inside a row: deterministic and easy to inspect
        input_ids: list[int] = []
        labels: list[int] = []
        for i in members:
            input_ids.extend(items[i]["input_ids"])
            labels.extend([IGNORE_INDEX, *items[i]["labels"][1:]])
        packed.append({"input_ids": input_ids, "labels": labels,
                       "seq_lengths": [len(items[i]["input_ids"]) for i in members]})
    return packed


@dataclass
class PackedCollator:
    """Pads packed rows and builds position_ids plus the 4-D block-diagonal causal mask
    (additive float: 0 where a query may attend, the dtype's minimum elsewhere)."""

    pad_token_id: int
    dtype: Any = None  # the model's float dtype; float32 if None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        dtype = self.dtype or torch.float32
        width = max(len(r["input_ids"]) for r in rows)
        batch = len(rows)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((batch, width), dtype=torch.long)
        segment = torch.full((batch, width), -1, dtype=torch.long)  # -1: padding
        for b, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[b, :n] = torch.tensor(row["input_ids"])
            labels[b, :n] = torch.tensor(row["labels"])
            start = 0
            for k, length in enumerate(row.get("seq_lengths") or [n]):
                position_ids[b, start:start + length] = torch.arange(length)
                segment[b, start:start + length] = k
                start += length
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        same = segment[:, :, None] == segment[:, None, :]
        allowed = same & causal & (segment[:, :, None] >= 0)
        allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no all-masked rows (NaN)
        mask = torch.zeros((batch, 1, width, width), dtype=dtype)
        mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": mask}
