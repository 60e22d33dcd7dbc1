"""The one contract between the driver (rayft.train.launch) and each Ray Train worker
(rayft.train.worker): everything a worker needs to train one stage.

Ray pickles it into `train_loop_config` (as `{"job": StageJob}`). Driver and workers run the same
rayft, so this class is the contract's only version: a field added here is seen by both sides,
and nothing is looked up by a string key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from rayft.config.pipeline import Pipeline
    from rayft.schema.sections import AdapterConfig
    from rayft.schema.stage import StageBase
    from rayft.data.build import PreparedData

JOB_KEY = "job"  # the one key of Ray Train's train_loop_config


@dataclass(frozen=True)
class StageJob:
    pipeline: Pipeline  # the validated run config
    stage_index: int
    stage_dir: Path
    data: PreparedData  # prepared once on the driver
    adapter: AdapterConfig  # the run's adapter settings, `init_from` = the adapter this stage starts from
    threads: int  # torch threads per CPU worker
    started_at: float  # when the run started (time to first step)
    user_deepspeed: dict[str, Any] | None = None  # training.deepspeed.config_file, read on the driver
    trainer_callbacks: tuple[Callable[[], Any], ...] = ()  # factories of extra transformers callbacks
    rollout_engines: tuple[Any, ...] = ()  # vLLM engine actors for the stage's rollouts (rayft.train.rollout_engines)

    @property
    def stage(self) -> StageBase:
        """This stage's config (the StageBase subclass its stage module registered)."""
        return self.pipeline.stages[self.stage_index]
