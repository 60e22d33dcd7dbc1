"""Direct Preference Optimization: TRL's DPOTrainer on (prompt, chosen, rejected) pairs.

The reference model is never a second copy of the base weights. With LoRA, `ref_model=None` and
the policy is a PEFT model, so TRL computes reference log-probs on the same base: with a frozen
copy of the starting adapter (TRL adds it as adapter `ref`; when the stage starts from an SFT
adapter the reference is that SFT policy, as DPO intends), or with the adapter disabled when it
starts fresh (then the reference is the base). Only the trained adapter is saved; the frozen
`ref` copy is dropped. Full fine-tuning needs a reference copy (TRL loads one from the base).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rayft.data.build import PreparedData
from rayft.stages import StageImpl, WorkerContext, register


@register("dpo")
class DPOStage(StageImpl):
    def prepare_data(self, stage_cfg: Any, tokenizer: Any) -> PreparedData:
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


def check_shared_reference(trainer: Any, adapter_type: str) -> None:
    """With LoRA the reference shares the policy's base weights: no second model is loaded."""
    if adapter_type == "lora" and trainer.ref_model is not None:
        raise RuntimeError("expected the reference to share the LoRA policy's base weights (ref_model=None); "
                           "TRL loaded a second model")


def drop_reference_copy(staging: Path) -> None:
    """PEFT saves every adapter of a model; the frozen `ref` copy TRL adds is not part of the output."""
    ref = Path(staging) / "ref"
    if (ref / "adapter_config.json").is_file():
        shutil.rmtree(ref)
