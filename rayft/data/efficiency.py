"""How much of a batch is real tokens: length percentiles and padding fractions of the three
ways to batch (pad to max_length, dynamic padding, packing), computed from token lengths only."""

from __future__ import annotations

from typing import Any

from rayft.data.packing import pack_examples


def length_percentiles(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {}
    ordered = sorted(lengths)

    def pct(p: float) -> int:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    return {"min": ordered[0], "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": ordered[-1]}


def _dynamic_padded(lengths: list[int], batch_size: int) -> int:
    """Tokens computed when each batch (in data order) is padded to its own longest row."""
    batches = [lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size)]
    return sum(len(batch) * max(batch) for batch in batches)


def padding_fractions(lengths: list[int], batch_size: int, max_length: int) -> dict[str, Any]:
    """Share of computed tokens that are padding, for each batching mode."""
    if not lengths:
        return {}
    real = sum(lengths)
    packed = pack_examples([{"input_ids": [0] * n, "labels": [0] * n} for n in lengths], max_length)
    packed_lengths = [len(row["input_ids"]) for row in packed]
    return {
        "pad_to_max_length": 1 - real / (len(lengths) * max_length),
        "dynamic": 1 - real / _dynamic_padded(lengths, batch_size),
        "packed": 1 - real / _dynamic_padded(packed_lengths, batch_size),
        "rows": len(lengths), "packed_rows": len(packed),
    }
