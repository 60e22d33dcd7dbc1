"""`Pipeline`: the whole YAML file. A run is a base `model`, an `adapter` (LoRA or full fine-tuning),
`data`, an ordered list of `stages`, and the `training` / `scaling` / `storage` / `eval` settings.
Top-level `data` and `training` are defaults; a stage may override any of their fields
(`stages: [{type: sft, training: {lr: 1e-4}}]`), and the merged result is validated as a whole,
so an error in an override still names its full dotted path.

`stages` accepts every stage type registered in rayft.stages (each stage module declares its
config class), so this module sits above the stages; the sections it is made of sit below them.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, model_validator

from rayft.schema.base import Strict
from rayft.models.tokens import CHATML_TOKENS
from rayft.schema.cluster import ClusterConfig
from rayft.schema.generation import GenerationConfig
from rayft.schema.scaling import check_scaling
from rayft.schema.search_space import check_path
from rayft.schema.sections import (AdapterConfig, DataConfig, EvalConfig, ModelConfig, ScalingConfig, StorageConfig,
                                   TrackingConfig, TrainingConfig)
from rayft.schema.serve import ServeConfig
from rayft.schema.tune import TuneConfig
from rayft.stages import stage_configs
from rayft.stages.sft import SFTStage

# One class per stage `type`, told apart by it; a stage module's registration adds its class here.
StageConfig = Annotated[Union[tuple(stage_configs())], Field(discriminator="type")]


# Where a data section's rows come from: a stage that names one of them inherits none of the
# top level's (a stage with its own `path` does not also get the top level's `dataset`).
ROW_SOURCES = ("path", "sources", "dataset")


class Pipeline(Strict):
    """One rayft run: a base model and an ordered list of training stages."""

    run_name: str | None = Field(
        None, description="Run directory name; default `<config name>-<timestamp>`. Naming a run "
        "lets a re-run skip its completed stages.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    stages: list[StageConfig] = Field(
        default_factory=lambda: [SFTStage()], min_length=1,
        description="Ordered training stages; each starts from the previous stage's output.")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="The engine that writes "
                                         "evaluation answers, on-policy pairs and teacher data: hf or vLLM.")
    tune: TuneConfig | None = Field(None, description="A Ray Tune sweep (`rayft tune`): search space, metric, "
                                    "scheduler, search algorithm. `rayft train` ignores it. See docs/tune.md.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="`rayft serve`: the OpenAI-compatible "
                               "Ray Serve app for this model, its adapters and merged models.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Kubernetes (KubeRay) settings "
                                   "for `rayft k8s render`; local runs ignore them.")

    @model_validator(mode="before")
    @classmethod
    def _stage_defaults(cls, raw: Any) -> Any:
        """Fill each stage's `training` / `data` from the top level, stage keys winning."""
        if not isinstance(raw, dict):
            return raw
        if "stages" not in raw:
            raw = {**raw, "stages": [{"type": "sft"}]}
        if not isinstance(raw["stages"], list):
            return raw
        merged = []
        for stage in raw["stages"]:
            if isinstance(stage, dict):
                stage = dict(stage)
                for section in ("training", "data"):
                    base, own = raw.get(section) or {}, stage.get(section) or {}
                    if isinstance(base, dict) and isinstance(own, dict):
                        if section == "data" and any(k in own for k in ROW_SOURCES):
                            base = {k: v for k, v in base.items() if k not in ROW_SOURCES}
                        stage[section] = {**base, **own}
            merged.append(stage)
        return {**raw, "stages": merged}

    @model_validator(mode="after")
    def _unique_stage_names(self) -> "Pipeline":
        seen: set[str] = set()
        for i, stage in enumerate(self.stages):
            if stage.name is None:
                stage.name = stage.type if stage.type not in seen else f"{stage.type}{i}"
            if stage.name in seen:
                raise ValueError(f"stages.{i}.name: '{stage.name}' is used by an earlier stage")
            seen.add(stage.name)
        return self

    @model_validator(mode="after")
    def _chatml_tokens(self) -> "Pipeline":
        """`data.template: chatml` in any stage adds ChatML's two tokens to the run's tokenizer (one
        tokenizer per run, so every stage and the evaluation agree on the ids)."""
        if any(stage.data.template == "chatml" for stage in self.stages) or self.data.template == "chatml":
            missing = [t for t in CHATML_TOKENS if t not in self.model.add_special_tokens]
            if missing:
                self.model.add_special_tokens = [*self.model.add_special_tokens, *missing]
        return self

    @model_validator(mode="after")
    def _search_paths_exist(self) -> "Pipeline":
        """Every `tune.search_space` path names a field that a trial may change."""
        problems = [p for p in (check_path(path, type(self)) for path in (self.tune.search_space if self.tune else {}))
                    if p]
        if problems:
            raise ValueError("tune.search_space: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _stage_checks(self) -> "Pipeline":
        """What each stage type needs of the whole config (its config class's `problems` and `check`)."""
        for i, stage in enumerate(self.stages):
            problem = stage.problems(self, i)
            if problem:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _scaling_combinations(self) -> "Pipeline":
        problem = check_scaling(self)  # rayft.schema.scaling: strategy / precision / quantization
        if problem:
            raise ValueError(problem)
        return self
