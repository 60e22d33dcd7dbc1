"""Classic fine-tuning: a sequence classifier (one text or a text pair -> one of N labels), trained
with the transformers Trainer, cross-entropy, dynamic padding, evaluated by accuracy and macro F1.

The model is `AutoModelForSequenceClassification` with the stage's labels (rayft.models.classifier):
on a decoder such as the embedded model a score head reads the last token, as the reward model's
does; on a local encoder folder (BERT-style) its own head. With LoRA the adapter is a PEFT `SEQ_CLS`
adapter that saves the new head beside its weights, so `adapter/` plus the base rebuild the
classifier; config.json of the output records the label map. A classifier is not a policy: the
next stage starts from the policy before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from rayft.schema.stage import StageBase
from rayft.stages import StageImpl, WorkerContext, register

if TYPE_CHECKING:
    from rayft.data.build import PreparedData


class ClassifyStage(StageBase):
    type: Literal["classify"] = Field("classify", description="Sequence classification (one text or a text "
                                      "pair -> a label), transformers Trainer, accuracy and macro F1.")
    text_column: str = Field("text", description="The row's text (GLUE: `sentence1`).")
    pair_column: str | None = Field(None, description="The second text of a pair task (GLUE: `sentence2`); "
                                    "null: one text per row.")
    label_column: str = Field("label", description="The label: a name or an integer.")
    labels: list[str] | None = Field(None, description="Label names in id order (default: the training rows' "
                                     "integers 0..max, or their names sorted).")


@register(ClassifyStage)
class ClassifyImpl(StageImpl):
    produces_policy = False

    def starting_adapter(self, previous: Any) -> Any:
        """Only an earlier classifier adapter is continued (a policy adapter belongs to a causal LM)."""
        from rayft.models.adapters import adapter_task

        return previous if previous is not None and adapter_task(previous) == "SEQ_CLS" else None

    def prepare_data(self, stage: ClassifyStage, tokenizer: Any) -> PreparedData:
        from rayft.data.classification import prepare_classification

        return prepare_classification(stage, tokenizer)

    def load_model(self, model_path: str, pipeline: Any, adapter_cfg: Any, on_gpu: bool, stage: Any = None,
                   data: Any = None) -> Any:
        from rayft.models.adapters import apply_adapter
        from rayft.models.classifier import load_classifier
        from rayft.models.tokens import new_token_ids

        names = data.stats["labels"]
        if adapter_cfg.type == "full" and adapter_cfg.init_from:
            return load_classifier(adapter_cfg.init_from, pipeline.model, names, on_gpu)
        return apply_adapter(load_classifier(model_path, pipeline.model, names, on_gpu, seed=stage.training.seed),
                             adapter_cfg, task_type="SEQ_CLS", token_rows=new_token_ids(model_path, pipeline.model))

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        from rayft.metrics.classification import trainer_metrics

        args = TrainingArguments(**ctx.training_args)
        return Trainer(model=ctx.model, args=args, train_dataset=ctx.data.train, eval_dataset=ctx.data.eval,
                       data_collator=DataCollatorWithPadding(ctx.tokenizer), processing_class=ctx.tokenizer,
                       compute_metrics=trainer_metrics(ctx.data.stats["labels"]))
