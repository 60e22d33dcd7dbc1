"""Programmatic rewards for GRPO (and PPO): `rewards: [rayft.rewards:json_valid]`.

A reward function has the signature `f(prompts, completions, **kwargs) -> list[float]`, one
float per completion. The keyword arguments are the data rows' other text fields as lists
(e.g. `reference`, the row's own answer) plus whatever the trainer adds (TRL passes
`completion_ids`, `trainer_state`, ...); accept `**kwargs` and take what you need.
"""

from __future__ import annotations

import json
from typing import Any


def json_valid(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the completion is a JSON object or list, 0.5 when one is embedded in other text
    (first `{` to last `}`), else 0.0."""
    return [_json_score(c) for c in completions]


def length_penalty(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """Minus the completion's length in characters / 100: prefers short answers. Characters, not
    tokens, so the signal is dense even when every sample hits max_completion_length (as a
    random-weight test model's do)."""
    return [-len(c) / 100 for c in completions]


def exact_match(prompts: list[str], completions: list[str], reference: list[str] | None = None,
                **kwargs: Any) -> list[float]:
    """1.0 when the stripped completion equals the row's `reference` answer, else 0.0."""
    if reference is None:
        raise ValueError("exact_match needs a `reference` column (rayft adds the row's answer as `reference`)")
    return [float(c.strip() == (r or "").strip()) for c, r in zip(completions, reference)]


def short_answer(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """1.0 for an answer of at most 5 words, falling linearly to 0 at 25 words."""
    return [max(0.0, min(1.0, (25 - len(c.split())) / 20)) for c in completions]


def letter_share(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """The share of characters that are ASCII letters."""
    return [sum(ch.isascii() and ch.isalpha() for ch in c) / max(len(c), 1) for c in completions]


def _json_score(text: str) -> float:
    if _parses(text.strip()):
        return 1.0
    start, end = text.find("{"), text.rfind("}")
    return 0.5 if 0 <= start < end and _parses(text[start:end + 1]) else 0.0


def _parses(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (dict, list))
    except ValueError:
        return False
