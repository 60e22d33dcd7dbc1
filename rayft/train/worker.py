"""What each Ray Train worker runs for one stage: load model + adapter, build the stage's
trainer, train, and (rank 0) save the adapter or model into the stage directory."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class WorkerContext:
    """What a stage's `build_trainer` gets."""

    pipeline: Any  # rayft.config.Pipeline
    stage: Any  # the stage's config
    model: Any
    tokenizer: Any
    data: Any  # rayft.data.build.PreparedData
    training_args: dict[str, Any]
    on_gpu: bool
    run_dir: Path  # earlier stages' outputs are at run_dir / <stage name> (e.g. a reward model)
    init_adapter: str | None = None  # the adapter this stage started from (the previous stage's)


def train_stage_worker(config: dict[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`. `config` holds plain data only (see launch.py)."""
    import ray.train
    import torch

    from rayft.config import Pipeline
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.stages import get_stage
    from rayft.train.args import training_kwargs
    from rayft.train.rundir import METRICS_FILE, write_json_atomic

    pipeline = Pipeline.model_validate(config["pipeline"])
    stage = pipeline.stages[config["stage_index"]]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    on_gpu = pipeline.scaling.use_gpu and torch.cuda.is_available()
    if not on_gpu:
        torch.set_num_threads(config["threads"])
    stage_dir = Path(config["stage_dir"])
    if rank == 0:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(stage_dir / "tensorboard")

    # Resolved again here: on another node the driver's path may not exist; on the driver's node
    # this is a cache hit. A builtin converts once per node, under the cache's file lock.
    model_path = resolve_model(pipeline.model.name, pipeline.model.revision)
    tokenizer = load_tokenizer(model_path, pipeline.model.trust_remote_code)
    adapter_cfg = pipeline.adapter.model_copy(update={"init_from": config["init_adapter"]})
    stage_impl = get_stage(stage.type)
    model = stage_impl.load_model(model_path, pipeline, adapter_cfg, on_gpu)

    local_out = tempfile.mkdtemp(prefix=f"rayft-{stage.name}-r{rank}-")
    has_eval = config["data"].eval is not None
    args = training_kwargs(stage.training, output_dir=local_out, on_gpu=on_gpu, has_eval=has_eval,
                           tensorboard=rank == 0)
    wctx = WorkerContext(pipeline, stage, model, tokenizer, config["data"], args, on_gpu, stage_dir.parent,
                         config["init_adapter"])
    if hasattr(stage_impl, "run_loop"):  # a stage with its own explicit loop (PPO)
        metrics, trained = stage_impl.run_loop(wctx, config["started_at"])
    else:
        metrics, trained = _run_hf_trainer(wctx, stage_impl, config, ctx.get_world_size())
    if rank == 0:
        _save_output(trained, tokenizer, stage_dir, full=pipeline.adapter.type == "full",
                     extra=getattr(stage_impl, "save_extra", None))
        # Ray Train keeps only checkpoint-attached metrics in Result; the driver reads this file.
        write_json_atomic(stage_dir / METRICS_FILE, metrics)
    ray.train.report(metrics)


def _run_hf_trainer(wctx: WorkerContext, stage_impl: Any, config: dict[str, Any], world_size: int
                    ) -> tuple[dict[str, Any], Any]:
    """Train with the stage's transformers/TRL Trainer; checkpoints go through Ray Train."""
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers.trainer_callback import PrinterCallback

    from rayft.train.progress import ProgressCallback

    stage = wctx.stage
    trainer = stage_impl.build_trainer(wctx)
    progress = ProgressCallback(stage.name, config["started_at"])
    trainer.remove_callback(PrinterCallback)  # its raw dicts would duplicate our progress lines
    trainer.add_callback(progress)
    trainer.add_callback(RayTrainReportCallback())
    trainer = prepare_trainer(trainer)

    resume_from = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        resume_from = str(Path(checkpoint.to_directory()) / RayTrainReportCallback.CHECKPOINT_NAME)
    output = trainer.train(resume_from_checkpoint=resume_from)

    metrics: dict[str, Any] = {
        "global_step": trainer.state.global_step,
        "train_loss": output.training_loss,
        "train_runtime_s": output.metrics.get("train_runtime"),
        **progress.figures(output.metrics.get("train_runtime") or 0.0),
    }
    if stage.data.packing:  # TRL counts tokens from a 2-D attention mask; packed rows have a 4-D one
        metrics.update(_packed_token_figures(wctx.data.train, trainer, world_size, metrics))
    if wctx.data.eval is not None:
        metrics.update({k: v for k, v in trainer.evaluate().items() if k.startswith("eval_")})
    return metrics, trainer.accelerator.unwrap_model(trainer.model)


def _save_output(model: Any, tokenizer: Any, stage_dir: Path, full: bool, extra: Any = None) -> None:
    """Save into a temporary sibling, then rename: a half-written adapter is never picked up."""
    final = stage_dir / ("model" if full else "adapter")
    staging = stage_dir / f".{final.name}.partial-{time.time_ns()}"
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if extra is not None:  # stage-specific files beside the weights (e.g. PPO's value head)
        extra(staging)
    if final.exists():
        import shutil

        shutil.rmtree(final)
    staging.rename(final)


def _packed_token_figures(train: Any, trainer: Any, world_size: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """Real (non-padding) tokens trained on, from the rows processed and their mean length."""
    args = trainer.args
    rows = min(trainer.state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
               * world_size, int(len(train) * max(args.num_train_epochs, 1)) if args.max_steps <= 0 else 10**12)
    tokens = rows * sum(len(ids) for ids in train["input_ids"]) / max(len(train), 1)
    runtime = metrics.get("train_runtime_s") or 0.0
    return {"num_tokens": tokens, "tokens_per_s": tokens / runtime if runtime else None}
