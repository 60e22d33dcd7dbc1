"""Group Relative Policy Optimization: TRL's GRPOTrainer. For every prompt the policy samples
`num_generations` completions; each is scored by the stage's `rewards` (summed), and a
completion's advantage is its reward relative to its group's.

Rewards: `module:function` (`f(prompts, completions, **row_fields) -> list[float]`; the row's
other text fields, e.g. `reference`, arrive as keyword lists) or `stage:<name>` (a reward model
trained by an earlier `reward` stage of this run). With `beta > 0` the KL reference shares the
base weights (see rayft.stages.reference). TRL logs reward (mean and per function), reward_std,
completion lengths and, with beta, the KL; the held-out prompts give `eval_reward`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from rayft.schema.stage import StageBase, check_reward_sources
from rayft.stages import StageImpl, WorkerContext, register
from rayft.stages.reference import check_shared_reference, drop_reference_copy

if TYPE_CHECKING:
    from rayft.data.build import PreparedData


class GRPOStage(StageBase):
    type: Literal["grpo"] = Field("grpo", description="Group Relative Policy Optimization (TRL GRPOTrainer): "
                                  "sampled completions scored by reward functions.")
    rewards: list[str] = Field(
        min_length=1, description="Reward sources, summed: `module:function` (a Python function "
        "`f(prompts, completions, **row) -> list[float]`) or `stage:<name>` (a reward model trained by an "
        "earlier stage of this pipeline).")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group).")
    max_completion_length: int = Field(64, ge=1, description="Tokens per sampled completion.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    beta: float = Field(0.0, ge=0, description="KL coefficient against the reference (0: no reference needed).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field("dapo", description="Loss aggregation.")

    def check(self, pipeline: Any, index: int) -> str | None:
        return _check_group_batches(pipeline, index) or check_reward_sources(pipeline, index)


@register(GRPOStage)
class GRPOImpl(StageImpl):
    def preflight(self, stage: GRPOStage, index: int) -> None:
        from rayft.rl.reward_specs import check_importable

        check_importable(stage.rewards, f"stages.{index}.rewards")

    def prepare_data(self, stage: GRPOStage, tokenizer: Any) -> PreparedData:
        from rayft.data.preference_data import prepare_prompts

        return prepare_prompts(stage.data, tokenizer, stage="grpo")

    def build_trainer(self, ctx: WorkerContext) -> Any:
        from trl import GRPOConfig, GRPOTrainer

        from rayft.rl.reward_specs import resolve_reward

        stage = ctx.stage
        index = [s.name for s in ctx.pipeline.stages].index(stage.name)
        # Batch divisibility by num_generations is checked when the config loads (GRPOStage.check).
        rewards = [resolve_reward(spec, ctx.run_dir, f"stages.{index}.rewards") for spec in stage.rewards]
        args = GRPOConfig(**ctx.training_args, num_generations=stage.num_generations,
                          max_completion_length=stage.max_completion_length, temperature=stage.temperature,
                          beta=stage.beta, loss_type=stage.loss_type)
        rollouts = None
        if ctx.rollout_engines:  # generation.engine: vllm (rayft.train.rollout_engines started them)
            from rayft.generation.rollouts import GRPORollouts

            rollouts = GRPORollouts(list(ctx.rollout_engines), ctx.run_dir / stage.name / "rollout_adapters",
                                    max_tokens=stage.max_completion_length, temperature=stage.temperature,
                                    seed=stage.training.seed)
        trainer = GRPOTrainer(model=ctx.model, reward_funcs=rewards, args=args, train_dataset=ctx.data.train,
                              eval_dataset=ctx.data.eval, processing_class=ctx.tokenizer, rollout_func=rollouts)
        check_shared_reference(trainer, ctx.pipeline.adapter.type)
        return trainer

    def training_figures(self, ctx: WorkerContext, trainer: Any, world_size: int,
                         metrics: dict[str, Any]) -> dict[str, Any]:
        """Where the rollouts ran; on vLLM, how long saving the adapters and generating took."""
        rollouts = getattr(trainer, "rollout_func", None)
        return {"rollouts": rollouts.summary() if rollouts is not None else {"engine": "hf"}}

    def save_extra(self, staging: Path) -> None:
        drop_reference_copy(staging)


def _check_group_batches(pipeline: Any, index: int) -> str | None:
    """GRPO scores completions in groups of `num_generations`, so every global batch (train, and
    eval when there is held-out data) must hold whole groups. None when fine, else the message."""
    stage = pipeline.stages[index]
    if stage.type != "grpo":
        return None
    workers, t, g = pipeline.scaling.num_workers, stage.training, stage.num_generations
    train = t.batch_size * workers * t.grad_accum
    if train % g:
        return (f"stages.{index}.num_generations: GRPO needs the global batch (training.batch_size {t.batch_size} "
                f"x scaling.num_workers {workers} x training.grad_accum {t.grad_accum} = {train}) to be divisible "
                f"by num_generations ({g}); change training.batch_size or stages.{index}.num_generations")
    has_eval = stage.data.eval_path is not None or stage.data.eval_split > 0
    eval_batch = (t.eval_batch_size or t.batch_size) * workers
    if has_eval and eval_batch % g:
        return (f"stages.{index}.num_generations: GRPO needs the global eval batch (training.eval_batch_size "
                f"{t.eval_batch_size or t.batch_size} x scaling.num_workers {workers} = {eval_batch}) to be "
                f"divisible by num_generations ({g}); change training.eval_batch_size or set data.eval_split: 0")
    return None
