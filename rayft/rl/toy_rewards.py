"""Small programmatic rewards for trying the RL stages (and for their tests).

Each has the reward signature `f(prompts, completions, **row_fields) -> list[float]`.
"""

from __future__ import annotations

from typing import Any


def short_answer(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """1.0 for an answer of at most 5 words, falling linearly to 0 at 25 words."""
    return [max(0.0, min(1.0, (25 - len(c.split())) / 20)) for c in completions]


def newline_share(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """The share of characters that are line breaks: a dense signal even for a random-weight model
    (whose samples are near-uniform token soup), used to check the PPO mechanics quickly."""
    return [c.count("\n") / max(len(c), 1) for c in completions]


def letter_share(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """The share of characters that are ASCII letters."""
    return [sum(ch.isascii() and ch.isalpha() for ch in c) / max(len(c), 1) for c in completions]
