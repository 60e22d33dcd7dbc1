"""ORPO and CPO: reference-free preference optimisation (TRL's `trl.experimental` trainers).

Both train on (prompt, chosen, rejected) pairs with an NLL term on `chosen` plus a preference
term, so they need no reference model and can replace SFT + DPO with one stage. They log
rewards/{chosen,rejected,margins,accuracies} and the NLL loss (`eval_`-prefixed on the held-out
pairs in summary.json); ORPO also its log-odds ratio.
"""

from __future__ import annotations

import warnings
from typing import Any

from rayft.data.build import PreparedData
from rayft.stages import StageImpl, WorkerContext, register


class _ReferenceFreeStage(StageImpl):
    def prepare_data(self, stage_cfg: Any, tokenizer: Any) -> PreparedData:
        from rayft.data.preference_data import prepare_preference

        return prepare_preference(stage_cfg.data, tokenizer, stage=stage_cfg.type)


@register("orpo")
class ORPOStage(_ReferenceFreeStage):
    def build_trainer(self, ctx: WorkerContext) -> Any:
        with warnings.catch_warnings():  # "experimental" import warning: pinned TRL, checked here
            warnings.simplefilter("ignore")
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(**ctx.training_args, beta=ctx.stage.beta, max_length=ctx.stage.data.max_length,
                          dataset_num_proc=None)
        return ORPOTrainer(model=ctx.model, args=args, train_dataset=ctx.data.train, eval_dataset=ctx.data.eval,
                           processing_class=ctx.tokenizer)


@register("cpo")
class CPOStage(_ReferenceFreeStage):
    def build_trainer(self, ctx: WorkerContext) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from trl.experimental.cpo import CPOConfig, CPOTrainer

        cfg = ctx.stage
        args = CPOConfig(**ctx.training_args, beta=cfg.beta, loss_type=cfg.loss_type, cpo_alpha=cfg.cpo_alpha,
                         simpo_gamma=cfg.simpo_gamma, max_length=cfg.data.max_length, dataset_num_proc=None)
        return CPOTrainer(model=ctx.model, args=args, train_dataset=ctx.data.train, eval_dataset=ctx.data.eval,
                          processing_class=ctx.tokenizer)
