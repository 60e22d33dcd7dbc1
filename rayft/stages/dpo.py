"""Direct Preference Optimization: TRL's DPOTrainer on (prompt, chosen, rejected) pairs.

The reference model is never a second copy of the base weights. With LoRA, `ref_model=None` and
the policy is a PEFT model, so TRL computes reference log-probs on the same base: with a frozen
copy of the starting adapter (TRL adds it as adapter `ref`; when the stage starts from an SFT
adapter the reference is that SFT policy, as DPO intends), or with the adapter disabled when it
starts fresh (then the reference is the base). Only the trained adapter is saved; the frozen
`ref` copy is dropped. Full fine-tuning needs a reference copy (TRL loads one from the base).
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


class DPOStage(StageBase):
    type: Literal["dpo"] = Field("dpo", description="Direct Preference Optimization (TRL DPOTrainer); the "
                                 "reference is the base with the adapter disabled.")
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL to the reference.")
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
                       "aot", "apo_zero", "apo_down", "discopop", "sigmoid_norm"] = Field(
        "sigmoid", description="DPO loss variant (TRL names).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed label noise (robust/cDPO).")


@register(DPOStage)
class DPOImpl(StageImpl):
    def prepare_data(self, stage_cfg: DPOStage, tokenizer: Any) -> PreparedData:
        from rayft.data.preference_data import prepare_preference

        return prepare_preference(stage_cfg.data, tokenizer, stage="dpo")

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from trl import DPOConfig, DPOTrainer

        cfg = ctx.stage
        args = DPOConfig(**ctx.training_args, beta=cfg.beta, loss_type=[cfg.loss_type],
                         label_smoothing=cfg.label_smoothing, max_length=cfg.data.max_length, dataset_num_proc=None)
        # TRL logs rewards/{chosen,rejected,margins,accuracies} (eval_ prefixed on evaluate), which
        # reach summary.json as eval_rewards/margins and eval_rewards/accuracies.
        trainer = DPOTrainer(model=ctx.model, ref_model=None, args=args, train_dataset=ctx.data.train,
                             eval_dataset=ctx.data.eval, processing_class=ctx.tokenizer)
        check_shared_reference(trainer, ctx.pipeline.adapter.type)
        return trainer

    def save_extra(self, staging: Path) -> None:
        drop_reference_copy(staging)
