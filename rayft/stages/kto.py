"""Kahneman-Tversky Optimization: TRL's KTOTrainer on unpaired feedback.

Preference pairs are unpaired on the driver (`chosen` -> a desirable completion, `rejected` ->
an undesirable one), shuffled so that KTO's in-batch KL estimate pairs mismatched prompts. The
reference shares the base weights as in DPO (see rayft.stages.reference). TRL logs
rewards/{chosen,rejected,margins}, logps and the KL estimate; eval_-prefixed in summary.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from rayft.schema.stage import StageBase
from rayft.stages import StageImpl, WorkerContext, register
from rayft.stages.reference import check_shared_reference, drop_reference_copy

if TYPE_CHECKING:
    from rayft.data.build import PreparedData


class KTOStage(StageBase):
    type: Literal["kto"] = Field("kto", description="Kahneman-Tversky Optimization (TRL KTOTrainer): preference "
                                 "pairs are unpaired into desirable / undesirable completions.")
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference.")
    desirable_weight: float = Field(1.0, gt=0, description="Loss weight of desirable (chosen) completions.")
    undesirable_weight: float = Field(1.0, gt=0, description="Loss weight of undesirable (rejected) completions.")

    def check(self, pipeline: Any, index: int) -> str | None:
        if self.training.batch_size < 2:
            return (f"stages.{index}.training.batch_size: KTO estimates its KL term within a batch, "
                    f"so each worker needs at least 2 rows (got {self.training.batch_size})")
        return None


@register(KTOStage)
class KTOImpl(StageImpl):
    def prepare_data(self, stage: KTOStage, tokenizer: Any) -> PreparedData:
        from rayft.data.build import PreparedData
        from rayft.data.preference_data import prepare_preference, unpair

        pairs = prepare_preference(stage.data, tokenizer, stage="kto")
        seed = stage.data.seed
        data = PreparedData(unpair(pairs.train, seed), unpair(pairs.eval, seed), pairs.stats, pairs.removed, pairs.problems,
                            pairs.filtered)
        data.stats["train"]["unpaired_rows"] = len(data.train)
        return data

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from trl import KTOConfig, KTOTrainer

        stage = ctx.stage
        args = KTOConfig(**ctx.training_args, beta=stage.beta, desirable_weight=stage.desirable_weight,
                         undesirable_weight=stage.undesirable_weight, max_length=stage.data.max_length,
                         dataset_num_proc=None)
        trainer = KTOTrainer(model=ctx.model, ref_model=None, args=args, train_dataset=ctx.data.train,
                             eval_dataset=ctx.data.eval, processing_class=ctx.tokenizer)
        check_shared_reference(trainer, ctx.pipeline.adapter.type)
        return trainer

    def save_extra(self, staging: Path) -> None:
        drop_reference_copy(staging)
