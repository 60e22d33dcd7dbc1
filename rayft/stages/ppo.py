"""PPO (`type: ppo`): rayft's own loop (rayft.rl.ppo_trainer) on the shared launcher.

Starts from the previous stage's adapter (usually SFT); the reference policy is the same model
with the adapter disabled. Rewards come from Python functions or an earlier reward stage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from rayft.schema.scaling import training_field
from rayft.schema.stage import StageBase, check_reward_sources
from rayft.stages import StageImpl, WorkerContext, register

if TYPE_CHECKING:
    from rayft.data.build import PreparedData


class PPOStage(StageBase):
    type: Literal["ppo"] = Field("ppo", description="Proximal Policy Optimization (rayft's own, TRL has none): "
                                 "rollouts, reward, KL to the reference, value-head critic, GAE, clipped losses.")
    rewards: list[str] = Field(
        min_length=1, description="Reward sources, summed: `module:function` (`f(prompts, completions, **row) "
        "-> list[float]`) or `stage:<name>` (a reward model trained by an earlier stage).")
    max_new_tokens: int = Field(32, ge=1, description="Tokens per rollout completion.")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus sampling mass.")
    kl_coef: float = Field(0.05, ge=0, description="Per-token KL penalty against the reference (adapter off); "
                           "the starting value when `kl_target` is set.")
    kl_target: float | None = Field(
        None, gt=0, description="Adaptive KL control (Ziegler et al. 2019): after each step the coefficient moves "
        "towards keeping the sequence KL near this many nats. null: `kl_coef` stays fixed.")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive KL: sequences over which the coefficient may "
                            "change by about e^0.2 (larger: slower).")
    gamma: float = Field(1.0, gt=0, le=1, description="Discount of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="Lambda of GAE.")
    clip_range: float = Field(0.2, gt=0, description="Policy ratio clipping.")
    clip_range_value: float = Field(0.2, gt=0, description="Value clipping around the rollout's values.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout batch.")
    minibatch_size: int = Field(4, ge=1, description="Sequences per PPO minibatch (per worker).")
    whiten_advantages: bool = Field(True, description="Normalise advantages to zero mean, unit variance.")
    reference: Literal["shared", "copy"] = Field(
        "shared", description="`shared`: the reference runs on the policy's own base weights (adapter "
        "disabled, or the starting adapter kept frozen); `copy`: a separate frozen model (needed for "
        "adapter.type full; twice the memory).")

    def check(self, pipeline: Any, index: int) -> str | None:
        if self.training.strategy != "ddp":
            return (f"{training_field(pipeline, index)}.strategy: the PPO stage runs rayft's own training loop, "
                    f"which supports ddp only (got {self.training.strategy})")
        if self.training.selection() is not None:
            which = "best" if self.training.best is not None else "early_stopping"
            return (f"{training_field(pipeline, index)}.{which}: the PPO stage reports rollout rewards, not "
                    "evaluations of held-out rows, so there is nothing to choose from; drop it")
        if self.training.max_steps < 1:
            return (f"{training_field(pipeline, index)}.max_steps: PPO runs a fixed number of rollout steps; "
                    "set it (e.g. 20)")
        return check_reward_sources(pipeline, index)


@register(PPOStage)
class PPOImpl(StageImpl):
    def preflight(self, stage: PPOStage, index: int) -> None:
        from rayft.rl.reward_specs import check_importable

        check_importable(stage.rewards, f"stages.{index}.rewards")

    def prepare_data(self, stage: PPOStage, tokenizer: Any) -> PreparedData:
        from rayft.data.preference_data import prepare_prompts

        prepared = prepare_prompts(stage.data, tokenizer, stage=stage.name)
        prepared.eval = None  # PPO reports rollout rewards; held-out prompts are not scored yet
        return prepared

    def run_loop(self, ctx: WorkerContext, started_at: float) -> tuple[dict[str, Any], Any]:
        import ray.train

        from rayft.rl.ppo_checkpoint import load_ppo_checkpoint, save_ppo_checkpoint
        from rayft.rl.ppo_trainer import PPOTrainer
        from rayft.records.attempts import PROGRESS_FILE
        from rayft.records.rundir import write_json_atomic
        from rayft.rl.reward_specs import resolve_reward
        from rayft.records.tracking import StepLogger

        stage, training = ctx.stage, ctx.stage.training
        rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
        rows = ctx.data.train.to_list()
        shard = rows[rank::world] or rows  # each worker rolls out its own shard of the prompts
        index = [s.name for s in ctx.pipeline.stages].index(stage.name)
        rewards = [resolve_reward(spec, ctx.run_dir, f"stages.{index}.rewards") for spec in stage.rewards]
        import torch

        torch.manual_seed(training.seed + rank)  # different samples per worker; weights are broadcast
        ref_model = None
        if stage.reference == "copy" or ctx.pipeline.adapter.type == "full":
            ref_model = frozen_reference_copy(ctx.pipeline, ctx.init_adapter, ctx.on_gpu)
        sampler = None
        if ctx.rollout_engines:  # generation.engine: vllm (rayft.train.rollout_engines started them)
            from rayft.generation.rollouts import EngineSampler

            sampler = EngineSampler(list(ctx.rollout_engines), ctx.run_dir / stage.name / "rollout_adapters",
                                    max_tokens=stage.max_new_tokens, temperature=stage.temperature, top_p=stage.top_p,
                                    seed=training.seed + rank)
        trainer = PPOTrainer(ctx.model, ctx.tokenizer, stage, training.lr, rewards, shard, training.batch_size,
                             training.seed + rank, training.max_grad_norm, log=print, ref_adapter=ctx.init_adapter,
                             ref_model=ref_model, sampler=sampler)
        self._trainer = trainer
        writer = StepLogger(ctx.training_args.get("report_to"), ctx.run_dir / stage.name / "tensorboard",
                            ctx.training_args.get("run_name") or stage.name,
                            params={"lr": training.lr, **stage.model_dump(exclude={"training", "data"})}
                            ) if rank == 0 else None
        history: list[dict[str, Any]] = []
        if ctx.resume is not None and ctx.resume.checkpoint is not None:  # a restart or a re-run
            history = load_ppo_checkpoint(trainer, ctx.resume.checkpoint, rank)
        t0 = time.time()
        first_step_at = None
        for step in range(trainer.global_step + 1, training.max_steps + 1):
            figures = trainer.step()
            first_step_at = first_step_at or time.time()
            history.append({"step": step, **figures})
            if rank == 0 and (step % training.logging_steps == 0 or step in (1, training.max_steps)):
                print(f"[{stage.name}] step {step}/{training.max_steps}  reward {figures['reward']:.4g}  "
                      f"kl {figures['kl']:.4g}  entropy {figures['entropy']:.4g}  "
                      f"clip {figures['clip_fraction']:.3f}  value_loss {figures['value_loss']:.4g}  "
                      f"generation {100 * figures['generation_share']:.0f}% of step time", flush=True)
            if writer is not None:
                for key, value in figures.items():
                    writer.add_scalar(f"ppo/{key}", value, step)
            if rank == 0:  # the step reached, for the attempts record if this attempt dies
                write_json_atomic(ctx.run_dir / stage.name / PROGRESS_FILE, {"global_step": step, "time": time.time()})
            if training.save_steps and step % training.save_steps == 0:
                save_ppo_checkpoint(trainer, history, rank, world)
        if writer is not None:
            writer.close()
        runtime = time.time() - t0
        head = history[: max(1, len(history) // 4)]
        tail = history[-max(1, len(history) // 4):]
        metrics = {
            "global_step": training.max_steps, "train_runtime_s": runtime, "ppo_history": history,
            "reward_first": sum(h["reward"] for h in head) / len(head),
            "reward_last": sum(h["reward"] for h in tail) / len(tail),
            "time_to_first_step_s": first_step_at - started_at if first_step_at else None,
            "generation_s": sum(h["generation_s"] for h in history),
            "training_s": sum(h["training_s"] for h in history),
            "rollouts": sampler.summary() if sampler is not None else {"engine": "hf"},
        }
        return metrics, ctx.model

    def save_extra(self, folder: Path) -> None:
        import torch

        from rayft.stages.reference import drop_reference_copy

        drop_reference_copy(folder)  # the frozen reference adapter is not part of the result
        torch.save(self._trainer.value_head.state_dict(), folder / "value_head.pt")


def frozen_reference_copy(pipeline: Any, init_adapter: str | None, on_gpu: bool) -> Any:
    """A separate frozen copy of the starting policy (base + `init_adapter`, the adapter the stage
    starts from, merged): PPO's `reference: copy`."""
    from rayft.models.adapters import load_for_inference
    from rayft.models.loader import resolve_model

    base = resolve_model(pipeline.model.name, pipeline.model.revision)
    start = Path(init_adapter) if init_adapter else None
    if start is not None and not (start / "adapter_config.json").is_file():  # a full model from a stage
        return load_for_inference(str(start), pipeline.model, None, on_gpu)
    model = load_for_inference(base, pipeline.model, start, on_gpu)
    return model.merge_and_unload() if start is not None else model

