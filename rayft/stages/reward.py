"""Reward model: a scalar score head on the base model, trained on preference pairs with TRL's
RewardTrainer (Bradley-Terry loss). Using the trained model (`RewardScorer`, the RL stages'
`rewards: [stage:<name>]`) is model loading: rayft.models.reward_model.

The model is `AutoModelForSequenceClassification(num_labels=1)`; with LoRA the adapter is a PEFT
`SEQ_CLS` adapter, which saves the new `score` head beside the LoRA weights (modules_to_save), so
`adapter/` alone plus the base model rebuilds the scorer. A reward model is not a policy: the next
stage starts from the policy before it, and the reward stage itself starts from the base model
(a policy adapter from an earlier SFT stage belongs to a causal LM, not to a score head).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from rayft.models.reward_model import is_reward_adapter, load_reward_model
from rayft.schema.stage import StageBase
from rayft.stages import StageImpl, WorkerContext, register

if TYPE_CHECKING:
    from rayft.data.build import PreparedData


class RewardStage(StageBase):
    type: Literal["reward"] = Field("reward", description="Reward model: a scalar head on the base, trained "
                                    "on preference pairs (TRL RewardTrainer).")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Pull mean rewards towards 0 (TRL's auxiliary loss); null: off.")


@register(RewardStage)
class RewardImpl(StageImpl):
    produces_policy = False

    def starting_adapter(self, previous: Path | None) -> Path | None:
        """Only an earlier reward adapter (e.g. `adapter.init_from`) is continued; a policy is not."""
        return previous if previous is not None and is_reward_adapter(previous) else None

    def prepare_data(self, stage: RewardStage, tokenizer: Any) -> PreparedData:
        from rayft.data.preference_data import prepare_preference

        # TRL's RewardTrainer drops pairs over max_length without a word; drop (and count) them here.
        return prepare_preference(stage.data, tokenizer, stage="reward", drop_too_long=True)

    def load_model(self, model_path: str, pipeline: Any, adapter_cfg: Any, on_gpu: bool, stage: Any = None,
                   data: Any = None) -> Any:
        from rayft.models.adapters import apply_adapter
        from rayft.models.tokens import new_token_ids

        return apply_adapter(load_reward_model(model_path, pipeline.model, on_gpu), adapter_cfg, task_type="SEQ_CLS",
                             token_rows=new_token_ids(model_path, pipeline.model))

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from trl import RewardConfig, RewardTrainer

        args = RewardConfig(**ctx.training_args, center_rewards_coefficient=ctx.stage.center_rewards_coefficient,
                            max_length=ctx.stage.data.max_length, dataset_num_proc=None)
        # TRL logs accuracy / margin / min, mean, max reward; evaluate() returns them with the `eval_`
        # prefix, so `eval_accuracy` (share of held-out pairs scored chosen > rejected) reaches summary.json.
        return RewardTrainer(model=ctx.model, args=args, train_dataset=ctx.data.train, eval_dataset=ctx.data.eval,
                             processing_class=ctx.tokenizer)
