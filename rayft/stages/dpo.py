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

from rayft.schema.pairs import OnPolicyPairs
from rayft.schema.stage import StageBase, check_reward_spec
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
    rpo_alpha: float | None = Field(
        None, gt=0, description="RPO: add this weight times the SFT loss (mean token NLL) on the chosen answers to "
        "the preference loss, so the chosen answers' likelihood does not fall while the margin grows (TRL: "
        "loss_type [<loss_type>, sft], loss_weights [1, rpo_alpha]). 1.0 is the RPO paper's value.")
    ld_alpha: float | None = Field(
        None, ge=0, le=1, description="LD-DPO length desensitisation: weight of the log-probs of tokens past the "
        "shorter answer's length (1: plain DPO; 0: compare only the shared length). Against a bias to longer "
        "answers.")
    pairs: OnPolicyPairs | None = Field(
        None, description="On-policy pairs: before training, the policy this stage starts from answers the stage's "
        "`data` (SFT rows: prompt and reference answer; training split only) `samples` times, and its best and worst "
        "answers by `score` become the pairs it trains on (`<stage>/pairs/pairs.jsonl`). Several such stages in a "
        "row are rounds of generate -> pair -> DPO.")

    def check(self, pipeline: Any, index: int) -> str | None:
        return check_reward_spec(pipeline, index, self.pairs.score, f"stages.{index}.pairs.score") if self.pairs \
            else None


def dpo_loss_kwargs(stage: DPOStage) -> dict[str, Any]:
    """The stage's loss choices as TRL's DPOConfig takes them (RPO = the loss plus a weighted `sft`)."""
    return {"beta": stage.beta, "loss_type": [stage.loss_type, "sft"] if stage.rpo_alpha else [stage.loss_type],
            "loss_weights": [1.0, stage.rpo_alpha] if stage.rpo_alpha else None, "ld_alpha": stage.ld_alpha,
            "label_smoothing": stage.label_smoothing}


@register(DPOStage)
class DPOImpl(StageImpl):
    def preflight(self, stage: DPOStage, index: int) -> None:
        from rayft.rl.reward_specs import check_importable

        if stage.pairs is not None:
            check_importable([stage.pairs.score], f"stages.{index}.pairs.score")

    def prepare_data(self, stage: DPOStage, tokenizer: Any) -> PreparedData:
        """Preference pairs; for a stage whose `pairs:` are not built yet, its source rows as
        prompts and reference answers (what `rayft eval` and `rayft data inspect` read of it). The
        launcher builds the pairs first and hands the stage its pairs file (rayft.train.onpolicy_pairs)."""
        from rayft.data.preference_data import prepare_preference, prepare_prompts

        if stage.pairs is not None:
            return prepare_prompts(stage.data, tokenizer, stage="dpo")
        return prepare_preference(stage.data, tokenizer, stage="dpo")

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from trl import DPOConfig, DPOTrainer

        stage = ctx.stage
        args = DPOConfig(**ctx.training_args, **dpo_loss_kwargs(stage), max_length=stage.data.max_length,
                         dataset_num_proc=None)
        # TRL logs rewards/{chosen,rejected,margins,accuracies} and logps/{chosen,rejected} (eval_
        # prefixed on evaluate): summary.json keeps the held-out ones and `preference_history`
        # (rayft.records.progress) the per-step log-probs, to see whether the chosen answers' log-probs fall.
        trainer = DPOTrainer(model=ctx.model, ref_model=None, args=args, train_dataset=ctx.data.train,
                             eval_dataset=ctx.data.eval, processing_class=ctx.tokenizer)
        check_shared_reference(trainer, ctx.pipeline.adapter.type)
        return trainer

    def save_extra(self, staging: Path) -> None:
        drop_reference_copy(staging)
