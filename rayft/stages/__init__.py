"""Training algorithms, one module per stage `type`, found through a registry.

A stage says how to prepare its data on the driver and how to build its trainer on a worker;
the launcher (rayft.train) is the same for all of them. Adding an algorithm is one module with
a `@register("name")` class plus its config class in rayft.config; the launcher is untouched.
"""

from __future__ import annotations

from typing import Any, Protocol

from rayft.data.build import PreparedData


class Stage(Protocol):
    def prepare_data(self, stage_cfg: Any, tokenizer: Any) -> PreparedData:
        """Runs on the driver, once: tokenised train / eval datasets and their stats."""

    def build_trainer(self, ctx: "Any") -> Any:
        """Runs on each Ray worker: a transformers.Trainer (TRL or rayft's own) ready to train."""


STAGES: dict[str, type] = {}


def register(name: str):
    def wrap(cls: type) -> type:
        STAGES[name] = cls
        return cls

    return wrap


def get_stage(name: str) -> Stage:
    _import_builtin_stages()
    return STAGES[name]()


def _import_builtin_stages() -> None:
    from rayft.stages import sft  # noqa: F401 - registers itself
