"""Kahneman-Tversky Optimization: TRL's KTOTrainer on unpaired feedback.

Preference pairs are unpaired on the driver (`chosen` -> a desirable completion, `rejected` ->
an undesirable one), shuffled so that KTO's in-batch KL estimate pairs mismatched prompts. The
reference shares the base weights as in DPO (see rayft.stages.dpo). TRL logs
rewards/{chosen,rejected,margins}, logps and the KL estimate; eval_-prefixed in summary.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayft.data.build import PreparedData
from rayft.stages import StageImpl, WorkerContext, register
from rayft.stages.dpo import check_shared_reference, drop_reference_copy


@register("kto")
class KTOStage(StageImpl):
    def prepare_data(self, stage_cfg: Any, tokenizer: Any) -> PreparedData:
        from rayft.data.preference_data import prepare_preference, unpair

        pairs = prepare_preference(stage_cfg.data, tokenizer, stage="kto")
        seed = stage_cfg.data.seed
        data = PreparedData(unpair(pairs.train, seed), unpair(pairs.eval, seed), pairs.stats, pairs.removed, pairs.problems)
        data.stats["train"]["unpaired_rows"] = len(data.train)
        return data

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from trl import KTOConfig, KTOTrainer

        cfg = ctx.stage
        args = KTOConfig(**ctx.training_args, beta=cfg.beta, desirable_weight=cfg.desirable_weight,
                         undesirable_weight=cfg.undesirable_weight, max_length=cfg.data.max_length,
                         dataset_num_proc=None)
        trainer = KTOTrainer(model=ctx.model, ref_model=None, args=args, train_dataset=ctx.data.train,
                             eval_dataset=ctx.data.eval, processing_class=ctx.tokenizer)
        check_shared_reference(trainer, ctx.pipeline.adapter.type)
        return trainer

    def save_extra(self, staging: Path) -> None:
        drop_reference_copy(staging)
