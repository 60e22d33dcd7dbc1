"""Supervised fine-tuning: TRL's SFTTrainer on rayft's pre-tokenised, answer-masked data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from rayft.schema.stage import StageBase
from rayft.stages import StageImpl, WorkerContext, register

if TYPE_CHECKING:
    from rayft.data.build import PreparedData


class SFTStage(StageBase):
    type: Literal["sft"] = Field("sft", description="Supervised fine-tuning (TRL SFTTrainer).")


@register(SFTStage)
class SFTImpl(StageImpl):
    def prepare_data(self, stage_cfg: SFTStage, tokenizer: Any) -> PreparedData:
        from rayft.data.build import prepare

        return prepare(stage_cfg.data, tokenizer)

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from trl import SFTConfig, SFTTrainer

        packed = ctx.stage.data.packing
        collator = None
        if packed:
            from rayft.data.packing import PackedCollator

            collator = PackedCollator(ctx.tokenizer.pad_token_id, dtype=ctx.model.dtype)
        # Our rows already hold input_ids + labels (-100 on prompts), which TRL uses as they are;
        # packed rows also carry seq_lengths, which only rayft's collator understands.
        args = SFTConfig(**ctx.training_args, max_length=None, dataset_num_proc=None,
                         dataset_kwargs={"skip_prepare_dataset": True} if packed else None)
        return SFTTrainer(
            model=ctx.model, args=args, train_dataset=ctx.data.train, data_collator=collator,
            eval_dataset=_without_text(ctx.data.eval), processing_class=ctx.tokenizer,
        )


def _without_text(dataset: Any) -> Any:
    """The eval set minus the prompt/reference text kept for generation."""
    if dataset is None:
        return None
    return dataset.remove_columns([c for c in ("prompt", "reference") if c in dataset.column_names])
