"""Group Relative Policy Optimization: TRL's GRPOTrainer. For every prompt the policy samples
`num_generations` completions; each is scored by the stage's `rewards` (summed), and a
completion's advantage is its reward relative to its group's.

Rewards: `module:function` (`f(prompts, completions, **row_fields) -> list[float]`; the row's
other text fields, e.g. `reference`, arrive as keyword lists) or `stage:<name>` (a reward model
trained by an earlier `reward` stage of this run). With `beta > 0` the KL reference shares the
base weights (see rayft.stages.dpo). TRL logs reward (mean and per function), reward_std,
completion lengths and, with beta, the KL; the held-out prompts give `eval_reward`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayft.data.build import PreparedData
from rayft.stages import StageImpl, WorkerContext, register
from rayft.stages.dpo import check_shared_reference, drop_reference_copy


@register("grpo")
class GRPOStage(StageImpl):
    def prepare_data(self, stage_cfg: Any, tokenizer: Any) -> PreparedData:
        from rayft.data.preference_data import prepare_prompts
        from rayft.rl.rewards import resolve_reward

        for spec in stage_cfg.rewards:  # fail on the driver, before workers start, on a bad import
            if not spec.startswith("stage:"):
                resolve_reward(spec, None, f"stages.{stage_cfg.name}.rewards")
        return prepare_prompts(stage_cfg.data, tokenizer, stage="grpo")

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from trl import GRPOConfig, GRPOTrainer

        from rayft.rl.rewards import resolve_reward
        from rayft.stages.reward import reward_model_fn

        cfg = ctx.stage
        index = [s.name for s in ctx.pipeline.stages].index(cfg.name)
        # Batch divisibility by num_generations is checked when the config loads (rayft.config).
        rewards = [resolve_reward(spec, ctx.run_dir, f"stages.{index}.rewards", reward_model_fn) for spec in cfg.rewards]
        args = GRPOConfig(**ctx.training_args, num_generations=cfg.num_generations,
                          max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
                          beta=cfg.beta, loss_type=cfg.loss_type)
        trainer = GRPOTrainer(model=ctx.model, reward_funcs=rewards, args=args, train_dataset=ctx.data.train,
                              eval_dataset=ctx.data.eval, processing_class=ctx.tokenizer)
        check_shared_reference(trainer, ctx.pipeline.adapter.type)
        return trainer

    def save_extra(self, staging: Path) -> None:
        drop_reference_copy(staging)
