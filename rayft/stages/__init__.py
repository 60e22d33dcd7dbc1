"""Training algorithms, one module per stage `type`, found through a registry.

A stage says how to prepare its data on the driver and how to build its model and trainer on a
worker; the launcher (rayft.train) is the same for all of them. Adding an algorithm is one module
with a `@register("name")` subclass of `StageImpl` plus its config class in rayft.config; the
launcher is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayft.data.build import PreparedData

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from rayft.config import AdapterConfig, Pipeline
    from rayft.train.checkpoints import ResumePoint

STAGES: dict[str, type["StageImpl"]] = {}
BUILTIN_STAGE_MODULES = ("sft", "reward", "dpo", "orpo_cpo", "kto", "grpo", "ppo")


@dataclass
class WorkerContext:
    """What a stage's `build_trainer` / `run_loop` gets on each worker."""

    pipeline: Pipeline
    stage: Any  # the stage's config: one of rayft.config's stage classes
    model: PreTrainedModel  # from `load_model` (a PeftModel with LoRA)
    tokenizer: PreTrainedTokenizerBase
    data: PreparedData
    training_args: dict[str, Any]  # TrainingArguments keywords (rayft.train.args)
    on_gpu: bool
    run_dir: Path  # earlier stages' outputs are at run_dir / <stage name> (e.g. a reward model)
    init_adapter: str | None = None  # the adapter this stage started from (the previous stage's)
    resume: ResumePoint | None = None  # the checkpoint to resume from, if any


class StageImpl:
    """Defaults shared by the stages: a causal LM with the run's adapter, which becomes the
    policy that the next stage starts from and that `rayft eval` generates with."""

    produces_policy = True  # False for a reward model: the next stage starts from the policy before it

    def starting_adapter(self, previous: Any) -> Any:
        """The adapter this stage continues from, given the previous policy's (None: a fresh one)."""
        return previous

    def prepare_data(self, stage_cfg: Any, tokenizer: Any) -> PreparedData:
        """Runs on the driver, once: the datasets and their stats."""
        raise NotImplementedError

    def load_model(self, model_path: str, pipeline: Pipeline, adapter_cfg: AdapterConfig, on_gpu: bool) -> Any:
        """Runs on each worker: the model to train (default: the causal LM with the adapter)."""
        from rayft.models.adapters import apply_adapter
        from rayft.models.loader import load_causal_lm

        if adapter_cfg.type == "full" and adapter_cfg.init_from:  # continue a full fine-tune's model/
            return load_causal_lm(adapter_cfg.init_from, pipeline.model, on_gpu)
        return apply_adapter(load_causal_lm(model_path, pipeline.model, on_gpu), adapter_cfg)

    def build_trainer(self, ctx: WorkerContext) -> Any:
        """Runs on each worker: a transformers.Trainer (TRL's or rayft's own) ready to train."""
        raise NotImplementedError

    def run_loop(self, ctx: WorkerContext, started_at: float) -> tuple[dict[str, Any], Any] | None:
        """Runs on each worker, for a stage with its own explicit loop (PPO): train, and return the
        metrics and the model to save. None (the default): the launcher trains `build_trainer`'s Trainer."""
        return None

    def save_extra(self, staging: Path) -> None:
        """Runs on rank 0 while the output is staged: stage-specific files beside the weights."""


def register(name: str):
    def wrap(cls: type[StageImpl]) -> type[StageImpl]:
        STAGES[name] = cls
        return cls

    return wrap


def get_stage(name: str) -> StageImpl:
    _import_builtin_stages()
    return STAGES[name]()


def _import_builtin_stages() -> None:
    import importlib

    for module in BUILTIN_STAGE_MODULES:
        try:
            importlib.import_module(f"rayft.stages.{module}")
        except ModuleNotFoundError as exc:  # a stage module not written yet must not break the others
            if exc.name != f"rayft.stages.{module}":
                raise
