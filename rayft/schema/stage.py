"""What every stage config shares. Each stage type declares its own config class, a subclass of
`StageBase` with a `type` literal, in its module under rayft.stages, next to the code that trains
it; `Pipeline` accepts every registered one."""

from __future__ import annotations

from typing import ClassVar, Protocol, Sequence

from pydantic import Field

from rayft.schema.base import Strict
from rayft.schema.sections import (AdapterConfig, DataConfig, EvalConfig, ModelConfig, ScalingConfig, StorageConfig,
                                   TrackingConfig, TrainingConfig)


class RunSections(Protocol):
    """What a stage sees of the whole config: its sections and the list of stages. The config's
    `Pipeline` (rayft.config.pipeline) is built from the registered stage types, so it sits above
    the stages; they name it through this shape instead."""

    model: ModelConfig
    adapter: AdapterConfig
    data: DataConfig
    training: TrainingConfig
    scaling: ScalingConfig
    storage: StorageConfig
    eval: EvalConfig
    tracking: TrackingConfig
    stages: Sequence[StageBase]


class StageBase(Strict):
    name: str | None = Field(None, description="Directory name of the stage (default: its type).")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    data: DataConfig = Field(default_factory=DataConfig)

    packs: ClassVar[bool] = False  # trains on packed rows (`data.packing`); SFT only

    def problems(self, pipeline: RunSections, index: int) -> str | None:
        """Everything the config loader refuses of this stage: what every stage type refuses, then
        its own `check`. None when fine, else a message naming the field."""
        if self.training.selection() is not None:
            problem = self._selection_problem(pipeline, index)
            if problem:
                return problem
        if self.data.packing and not self.packs:
            where = "data" if self.data == pipeline.data else f"stages.{index}.data"
            return (f"{where}.packing: the {getattr(self, 'type', 'this')} stage trains on prompts / pairs and "
                    "cannot pack; set `packing: false` in this stage's `data`")
        return self.check(pipeline, index)

    def _selection_problem(self, pipeline: RunSections, index: int) -> str | None:
        """training.best / early_stopping choose among evaluations of held-out rows, and save the
        best weights from rank 0 when they improve: sharded weights would need a gather each time."""
        field = "training" if self.training == pipeline.training else f"stages.{index}.training"
        which = "best" if self.training.best is not None else "early_stopping"
        if self.training.eval_steps is None:
            return f"{field}.{which}: needs eval_steps (the evaluations to choose from); set e.g. eval_steps: 20"
        if self.data.eval_split == 0 and self.data.eval_path is None:
            return (f"{field}.{which}: needs held-out rows to evaluate (data.eval_split or data.eval_path); "
                    f"this stage has none")
        t = self.training
        if which == "best" and ((t.strategy == "deepspeed" and t.deepspeed.stage == 3) or t.strategy == "fsdp"):
            return (f"{field}.best: not with sharded weights ({'ZeRO-3' if t.strategy == 'deepspeed' else 'FSDP'}): "
                    "the best weights are saved by one worker when they improve; use ddp or ZeRO-2, or drop best")
        return None

    def check(self, pipeline: RunSections, index: int) -> str | None:
        """What this stage type needs of the whole config (e.g. batch shapes), checked when the
        config loads, before any worker starts: None when fine, else a message naming the field."""
        return None


def check_reward_sources(pipeline: RunSections, index: int) -> str | None:
    """A `stage:<name>` reward must name an earlier `reward` stage of the pipeline."""
    for spec in pipeline.stages[index].rewards:
        problem = check_reward_spec(pipeline, index, spec, f"stages.{index}.rewards")
        if problem:
            return problem
    return None


def check_reward_spec(pipeline: RunSections, index: int, spec: str, where: str) -> str | None:
    """`stage:<name>` must name an earlier `reward` stage; other specs are checked when resolved."""
    earlier = {s.name: s.type for s in pipeline.stages[:index]}
    name = spec[len("stage:"):] if spec.startswith("stage:") else None
    if name is not None and earlier.get(name) != "reward":
        return (f"{where}: '{spec}' names no earlier `reward` stage of this "
                f"pipeline (earlier stages: {', '.join(earlier) or 'none'})")
    return None
