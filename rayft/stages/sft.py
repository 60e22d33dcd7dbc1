"""Supervised fine-tuning: TRL's SFTTrainer on rayft's pre-tokenized, answer-masked data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from rayft.schema.stage import StageBase
from rayft.stages import StageImpl, WorkerContext, register

if TYPE_CHECKING:
    from rayft.data.build import PreparedData


class SFTStage(StageBase):
    type: Literal["sft"] = Field("sft", description="Supervised fine-tuning (TRL SFTTrainer).")

    packs: ClassVar[bool] = True


@register(SFTStage)
class SFTImpl(StageImpl):
    def prepare_data(self, stage: SFTStage, tokenizer: Any) -> PreparedData:
        from rayft.data.build import prepare

        return prepare(stage.data, tokenizer)

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
        from rayft.models.tokens import trains_output_rows

        trainer_class = _OwnHeadSFTTrainer() if trains_output_rows(ctx.model) else SFTTrainer
        return trainer_class(
            model=ctx.model, args=args, train_dataset=ctx.data.train, data_collator=collator,
            eval_dataset=_without_text(ctx.data.eval), processing_class=ctx.tokenizer,
        )


    def training_figures(self, ctx: WorkerContext, trainer: Any, world_size: int,
                         metrics: dict[str, Any]) -> dict[str, Any]:
        """Packed rows: TRL counts tokens from a 2-D attention mask and packed rows have a 4-D one,
        so the real (non-padding) tokens trained on come from the rows processed and their mean length."""
        if not ctx.stage.data.packing:
            return {}
        args, train = trainer.args, ctx.data.train
        rows = min(trainer.state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
                   * world_size, int(len(train) * max(args.num_train_epochs, 1)) if args.max_steps <= 0 else 10**12)
        tokens = rows * sum(len(ids) for ids in train["input_ids"]) / max(len(train), 1)
        runtime = metrics.get("train_runtime_s") or 0.0
        # TRL's per-log counts (behind steady_tokens_per_s) read the 4-D mask as tokens: not comparable.
        return {"num_tokens": tokens, "tokens_per_s": tokens / runtime if runtime else None,
                "steady_tokens_per_s": None}


def _without_text(dataset: Any) -> Any:
    """The eval set minus the prompt/reference text kept for generation."""
    if dataset is None:
        return None
    return dataset.remove_columns([c for c in ("prompt", "reference") if c in dataset.column_names])


def _OwnHeadSFTTrainer() -> type:
    """SFTTrainer whose loss comes from the model's own forward. TRL 1.16 computes SFT's loss with a
    fused LM head that reads `lm_head.weight` and `lm_head.bias` directly; with added tokens on a
    model whose output layer is tied to its embedding, PEFT wraps that layer (trainable token rows)
    and the wrapper has no `bias`. The model's forward applies the trained rows and computes the same
    token-mean loss (answer-only labels, `num_items_in_batch`); TRL's entropy / token-accuracy
    metrics are not logged on this path."""
    from transformers import Trainer
    from trl import SFTTrainer

    class OwnHeadSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return OwnHeadSFTTrainer
