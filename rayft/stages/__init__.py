"""Training algorithms, one module per stage `type`, found through a registry.

A stage module declares its config class (a `rayft.schema.stage.StageBase` subclass with a `type`
literal) and how to prepare its data on the driver and build its model and trainer on a worker
(a `StageImpl` subclass), tied by one `@register(ConfigClass)`. Every module of this package is
imported when the schema is built, so adding an algorithm is adding one module: the schema
(`Pipeline.stages`), the docs generator and the launcher (rayft.train) need no edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayft.schema.stage import RunSections, StageBase

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from rayft.data.build import PreparedData
    from rayft.schema.sections import AdapterConfig
    from rayft.records.checkpoints import ResumePoint

STAGES: dict[str, type["StageImpl"]] = {}
STAGE_CONFIGS: dict[str, type[StageBase]] = {}
# The order of the built-in types in the schema, the docs and error messages; other types follow by name.
BUILTIN_ORDER = ("sft", "reward", "dpo", "orpo", "cpo", "kto", "grpo", "ppo", "classify")


@dataclass
class WorkerContext:
    """What a stage's `build_trainer` / `run_loop` gets on each worker."""

    pipeline: RunSections  # the whole config
    stage: StageBase  # the stage's config: the StageBase subclass its module registered
    model: PreTrainedModel  # from `load_model` (a PeftModel with LoRA)
    tokenizer: PreTrainedTokenizerBase
    data: PreparedData
    training_args: dict[str, Any]  # TrainingArguments keywords (rayft.compute.training_args)
    on_gpu: bool
    run_dir: Path  # earlier stages' outputs are at run_dir / <stage name> (e.g. a reward model)
    init_adapter: str | None = None  # the adapter this stage started from (the previous stage's)
    resume: ResumePoint | None = None  # the checkpoint to resume from, if any
    rollout_engines: tuple[Any, ...] = ()  # vLLM engine actors: the stage rolls out on them (GRPO)


class StageImpl:
    """Defaults shared by the stages: a causal LM with the run's adapter, which becomes the
    policy that the next stage starts from and that `rayft eval` generates with."""

    produces_policy = True  # False for a reward model: the next stage starts from the policy before it

    def starting_adapter(self, previous: Any) -> Any:
        """The adapter this stage continues from, given the previous policy's (None: a fresh one)."""
        return previous

    def preflight(self, stage: Any, index: int) -> None:
        """Runs on the driver when the run starts, before its first stage: what the config cannot
        check by itself (a reward function that must import). Raises a UserError naming the field."""

    def prepare_data(self, stage: Any, tokenizer: Any) -> PreparedData:
        """Runs on the driver, once: the datasets and their stats."""
        raise NotImplementedError

    def load_model(self, model_path: str, pipeline: RunSections, adapter_cfg: AdapterConfig, on_gpu: bool,
                   stage: StageBase | None = None, data: PreparedData | None = None) -> Any:
        """Runs on each worker: the model to train (default: the causal LM with the adapter). `stage`
        and `data` are the stage's config and prepared data (a classifier's labels come from them)."""
        from rayft.models.adapters import apply_adapter
        from rayft.models.loader import load_causal_lm
        from rayft.models.tokens import new_token_ids

        if adapter_cfg.type == "full" and adapter_cfg.init_from:  # continue a full fine-tune's model/
            return load_causal_lm(adapter_cfg.init_from, pipeline.model, on_gpu)
        return apply_adapter(load_causal_lm(model_path, pipeline.model, on_gpu), adapter_cfg,
                             token_rows=new_token_ids(model_path, pipeline.model))

    def build_trainer(self, ctx: WorkerContext) -> Any:
        """Runs on each worker: a transformers.Trainer (TRL's or rayft's own) ready to train."""
        raise NotImplementedError

    def run_loop(self, ctx: WorkerContext, started_at: float) -> tuple[dict[str, Any], Any] | None:
        """Runs on each worker, for a stage with its own explicit loop (PPO): train, and return the
        metrics and the model to save. None (the default): the launcher trains `build_trainer`'s Trainer."""
        return None

    def training_figures(self, ctx: WorkerContext, trainer: Any, world_size: int,
                         metrics: dict[str, Any]) -> dict[str, Any]:
        """Runs on each worker after `build_trainer`'s Trainer trained: figures of the stage's own to
        add to (or correct in) the metrics that summary.json gets."""
        return {}

    def save_extra(self, staging: Path) -> None:
        """Runs on rank 0 while the output is staged: stage-specific files beside the weights."""


def register(config: type[StageBase]):
    """Register a stage type: its config class (whose `type` literal names it) and the StageImpl
    subclass this decorates."""
    name = stage_type(config)

    def wrap(cls: type[StageImpl]) -> type[StageImpl]:
        STAGES[name] = cls
        STAGE_CONFIGS[name] = config
        return cls

    return wrap


def stage_type(config: type[StageBase]) -> str:
    return config.model_fields["type"].default


def stage_configs() -> list[type[StageBase]]:
    """The config class of every stage type, built-in ones first (in BUILTIN_ORDER)."""
    _import_stage_modules()
    order = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    return sorted(STAGE_CONFIGS.values(), key=lambda c: (order.get(stage_type(c), len(order)), stage_type(c)))


def get_stage(name: str) -> StageImpl:
    _import_stage_modules()
    return STAGES[name]()


def _import_stage_modules() -> None:
    """Every module of this package: a stage type exists by having its module here."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
