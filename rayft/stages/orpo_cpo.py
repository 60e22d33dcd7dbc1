"""ORPO and CPO: reference-free preference optimisation (TRL's `trl.experimental` trainers).

Both train on (prompt, chosen, rejected) pairs with an NLL term on `chosen` plus a preference
term, so they need no reference model and can replace SFT + DPO with one stage. They log
rewards/{chosen,rejected,margins,accuracies} and the NLL loss (`eval_`-prefixed on the held-out
pairs in summary.json); ORPO also its log-odds ratio.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from rayft.schema.stage import StageBase
from rayft.stages import StageImpl, WorkerContext, register

if TYPE_CHECKING:
    from rayft.data.build import PreparedData


class ORPOStage(StageBase):
    type: Literal["orpo"] = Field("orpo", description="Odds-Ratio Preference Optimization (TRL experimental); "
                                  "no reference model.")
    beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio term (lambda in the paper).")


class CPOStage(StageBase):
    type: Literal["cpo"] = Field("cpo", description="Contrastive Preference Optimization (TRL experimental).")
    beta: float = Field(0.1, gt=0, description="Temperature of the preference loss.")
    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo", "alphapo"] = Field("sigmoid", description="CPO loss variant.")
    cpo_alpha: float = Field(1.0, ge=0, description="Weight of the NLL (behaviour-cloning) term.")
    simpo_gamma: float = Field(0.5, description="Target reward margin for loss_type simpo.")


class _ReferenceFreeImpl(StageImpl):
    def prepare_data(self, stage: Any, tokenizer: Any) -> PreparedData:
        from rayft.data.preference_data import prepare_preference

        return prepare_preference(stage.data, tokenizer, stage=stage.type)


@register(ORPOStage)
class ORPOImpl(_ReferenceFreeImpl):
    def build_trainer(self, ctx: WorkerContext) -> Any:
        with warnings.catch_warnings():  # "experimental" import warning: pinned TRL, checked here
            warnings.simplefilter("ignore")
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(**ctx.training_args, beta=ctx.stage.beta, max_length=ctx.stage.data.max_length,
                          dataset_num_proc=None)
        return ORPOTrainer(model=ctx.model, args=args, train_dataset=ctx.data.train, eval_dataset=ctx.data.eval,
                           processing_class=ctx.tokenizer)


@register(CPOStage)
class CPOImpl(_ReferenceFreeImpl):
    def build_trainer(self, ctx: WorkerContext) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from trl.experimental.cpo import CPOConfig, CPOTrainer

        stage = ctx.stage
        args = CPOConfig(**ctx.training_args, beta=stage.beta, loss_type=stage.loss_type, cpo_alpha=stage.cpo_alpha,
                         simpo_gamma=stage.simpo_gamma, max_length=stage.data.max_length, dataset_num_proc=None)
        return CPOTrainer(model=ctx.model, args=args, train_dataset=ctx.data.train, eval_dataset=ctx.data.eval,
                          processing_class=ctx.tokenizer)
