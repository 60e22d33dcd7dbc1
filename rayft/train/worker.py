"""What each Ray Train worker runs for one stage: load model + adapter, build the stage's
trainer, train, and (rank 0) save the adapter or model into the stage directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from rayft.stages import StageImpl, WorkerContext
from rayft.core.publish import staged_folder
from rayft.train.stage_job import JOB_KEY, StageJob


def train_stage_worker(config: dict[str, StageJob]) -> None:
    """Ray Train's `train_loop_per_worker`; `config` holds the driver's StageJob only."""
    import ray.train
    import torch

    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.models.tokens import check_fused_head
    from rayft.stages import get_stage
    from rayft.compute.training_args import training_kwargs
    from rayft.compute.memory import gather_peak_memory
    from rayft.records.attempts import record_attempt
    from rayft.records.checkpoints import choose_resume_checkpoint
    from rayft.records.rundir import METRICS_FILE, write_json_atomic
    from rayft.records.tracking import (end_mlflow_run, end_wandb_run, mlflow_run_name, report_targets, start_mlflow_run,
                                        start_wandb_run)
    from rayft.compute.strategy import use_gloo_for_cpu_deepspeed
    from rayft.compute.training_args import elastic_grad_accum

    job = config[JOB_KEY]
    pipeline, stage = job.pipeline, job.stage
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    on_gpu = pipeline.scaling.use_gpu and torch.cuda.is_available()
    # DeepSpeed picks its accelerator once per process, at first use; set here (not only by the CLI)
    # so workers on any node, started by any driver, agree with their device.
    os.environ["DS_ACCELERATOR"] = "cuda" if on_gpu else "cpu"
    if not on_gpu:
        torch.set_num_threads(job.threads)
    stage_dir = job.stage_dir

    # Resolved again here: on another node the driver's path may not exist; on the driver's node
    # this is a cache hit. A builtin converts once per node, under the cache's file lock.
    model_path = resolve_model(pipeline.model.name, pipeline.model.revision)
    tokenizer = load_tokenizer(model_path, pipeline.model.trust_remote_code, pipeline.model)
    stage_impl = get_stage(stage.type)
    local_out = tempfile.mkdtemp(prefix=f"rayft-{stage.name}-r{rank}-")
    has_eval = job.data.eval is not None
    args = training_kwargs(stage.training, output_dir=local_out, on_gpu=on_gpu, has_eval=has_eval,
                           report_to=report_targets(pipeline, stage.name, stage_dir, rank),
                           run_name=mlflow_run_name(stage_dir), user_deepspeed=job.user_deepspeed)
    args = use_gloo_for_cpu_deepspeed(args, on_gpu)
    if pipeline.scaling.elastic:  # keep the global batch on whatever worker count Ray gave this attempt
        args["gradient_accumulation_steps"] = elastic_grad_accum(stage.training.grad_accum, pipeline.scaling.num_workers,
                                                                 ctx.get_world_size())
    # ZeRO-3: TrainingArguments made before the model registers the DeepSpeed config, so
    # from_pretrained loads each layer straight into its shards (zero.Init) instead of whole.
    zero3_anchor = _zero3_init_anchor(args)
    model = stage_impl.load_model(model_path, pipeline, job.adapter, on_gpu, stage=stage, data=job.data)
    check_fused_head(stage.type, model)
    resume = choose_resume_checkpoint(rank)
    attempt = record_attempt(stage_dir, rank, resume, job.started_at, grad_accum=args["gradient_accumulation_steps"])
    wctx = WorkerContext(pipeline, stage, model, tokenizer, job.data, args, on_gpu, stage_dir.parent,
                         job.adapter.init_from, resume, job.rollout_engines)
    tracked = start_mlflow_run(args["report_to"], args["run_name"])
    wandb_run = start_wandb_run(args["report_to"], args["run_name"])
    outcome = stage_impl.run_loop(wctx, job.started_at)  # a stage with its own explicit loop (PPO)
    if outcome is None:
        outcome = _run_hf_trainer(wctx, stage_impl, job, ctx.get_world_size(), resume, attempt)
    metrics, trained = outcome
    del zero3_anchor
    metrics.update(gather_peak_memory(on_gpu))  # every rank takes part; rank 0 keeps the list
    full = pipeline.adapter.type == "full"
    if (metrics.get("best") or {}).get("published") == "best":  # training.best: the best evaluated weights
        if rank == 0:
            publish_best(stage_dir, full)
    elif rank == 0 or isinstance(trained, GatheredSave):  # sharded weights: every rank joins the gather
        _save_output(trained, tokenizer, stage_dir, full=full, extra=stage_impl.save_extra, writer=rank == 0)
    if rank == 0:  # Ray Train keeps only checkpoint-attached metrics in Result; the driver reads this file.
        write_json_atomic(stage_dir / METRICS_FILE, metrics)
    end_mlflow_run(tracked)
    end_wandb_run(wandb_run)
    ray.train.report(metrics)


def _run_hf_trainer(wctx: WorkerContext, stage_impl: StageImpl, job: StageJob, world_size: int,
                    resume: Any, attempt: int | None) -> tuple[dict[str, Any], Any]:
    """Train with the stage's transformers/TRL Trainer; checkpoints go through Ray Train, and a
    restarted or re-run stage resumes from the newest intact one (rayft.records.checkpoints)."""
    import contextlib

    import ray.train
    from ray.train.huggingface.transformers import prepare_trainer
    from transformers.trainer_callback import PrinterCallback

    from rayft.records.checkpoints import HF_FOLDER, CheckpointReporter
    from rayft.records.progress import ProgressCallback, ProgressRecorder
    from rayft.compute.strategy import needs_collective_save, strategy_in_effect

    stage = wctx.stage
    rank = ray.train.get_context().get_world_rank()
    trainer = stage_impl.build_trainer(wctx)
    progress = ProgressCallback(stage.name, job.started_at)
    trainer.remove_callback(PrinterCallback)  # its raw dicts would duplicate our progress lines
    trainer.add_callback(progress)
    trainer.add_callback(CheckpointReporter(rank, world_size))
    if wctx.pipeline.scaling.checkpoint_on_preemption:
        from rayft.records.preemption import PreemptionSaver

        trainer.add_callback(PreemptionSaver(job.stage_dir, rank))
    if rank == 0:
        trainer.add_callback(ProgressRecorder(job.stage_dir, attempt))
    tracker = _best_tracker(wctx, stage_impl, job, rank)
    if tracker is not None:
        trainer.add_callback(tracker)
    for make_callback in job.trainer_callbacks:  # the caller's (a Ray Tune trial reports each evaluation)
        trainer.add_callback(make_callback())
    trainer = prepare_trainer(trainer)

    # The HF checkpoint (weights, optimizer, scheduler, RNG per rank, trainer state with the global
    # step) restores everything; the Trainer skips the batches already seen in the current epoch.
    with (resume.checkpoint.as_directory() if resume.checkpoint else contextlib.nullcontext()) as local:
        output = trainer.train(resume_from_checkpoint=str(Path(local) / HF_FOLDER) if local else None)

    metrics: dict[str, Any] = {
        "global_step": trainer.state.global_step,
        "train_loss": output.training_loss,
        "train_runtime_s": output.metrics.get("train_runtime"),
        "strategy": strategy_in_effect(trainer),
        **progress.figures(output.metrics.get("train_runtime") or 0.0),
    }
    metrics.update(stage_impl.training_figures(wctx, trainer, world_size, metrics))
    if wctx.data.eval is not None:
        metrics.update({k: v for k, v in trainer.evaluate().items() if k.startswith("eval_")})
    if tracker is not None:  # which evaluation is published, its figures, and an early stop
        metrics.update(tracker.summary(metrics))
    if needs_collective_save(wctx.training_args):
        return metrics, GatheredSave(trainer)
    return metrics, trainer.accelerator.unwrap_model(trainer.model)


def _best_tracker(wctx: WorkerContext, stage_impl: StageImpl, job: StageJob, rank: int) -> Any:
    """training.best / early_stopping's callback (rayft.records.best), or None when neither is set."""
    from rayft.records.best import BEST_TAG, BestTracker

    training = wctx.stage.training
    selection = training.selection()
    if selection is None or wctx.data.eval is None:
        return None
    early = training.early_stopping

    def save(model: Any, folder: Path, tag: dict) -> None:
        import json

        with staged_folder(folder) as staging:  # weights and their step appear together, or not at all
            model.save_pretrained(staging, safe_serialization=True)
            wctx.tokenizer.save_pretrained(staging)
            stage_impl.save_extra(staging)
            (staging / BEST_TAG).write_text(json.dumps(tag))

    return BestTracker(job.stage_dir, rank, selection.key, selection.mode, keep_weights=training.best is not None,
                       patience=early.patience if early else None, min_delta=early.min_delta if early else 0.0,
                       save=save)


def publish_best(stage_dir: Path, full: bool) -> None:
    """The stage's output is its best evaluated weights (<stage>/best/), published as adapter/ or model/."""
    import shutil

    from rayft.records.best import BEST_DIR, BEST_TAG

    with staged_folder(stage_dir / ("model" if full else "adapter")) as staging:
        shutil.copytree(stage_dir / BEST_DIR, staging, dirs_exist_ok=True)
        (staging / BEST_TAG).unlink(missing_ok=True)


class GatheredSave:
    """Weights sharded across the workers (ZeRO-3, FSDP): the Trainer gathers them into one state
    dict (every rank must call it) and rank 0 writes the usual PEFT adapter / HF model files."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def save_pretrained(self, folder: Path, safe_serialization: bool = True) -> None:
        self.trainer.save_model(str(folder))
        (Path(folder) / "training_args.bin").unlink(missing_ok=True)  # the Trainer's, not the model's


def _zero3_init_anchor(args: dict[str, Any]) -> Any:
    from rayft.compute.strategy import zero_stage

    if zero_stage(args) != 3:
        return None
    from transformers import TrainingArguments

    return TrainingArguments(**args)


def _save_output(model: Any, tokenizer: Any, stage_dir: Path, full: bool, extra: Any,
                 writer: bool = True) -> None:
    """Save into a temporary sibling, then rename: a half-written adapter is never picked up.
    Only the `writer` (rank 0) writes; other ranks only join a gathered save."""
    final = stage_dir / ("model" if full else "adapter")
    if not writer:  # the gather needs every rank; only rank 0's Trainer writes files
        model.save_pretrained(stage_dir / f".{final.name}.gather-only", safe_serialization=True)
        return
    with staged_folder(final) as staging:
        if hasattr(model, "peft_config"):  # added tokens: their trained rows, not the whole matrix (rayft.models.tokens)
            model.save_pretrained(staging, safe_serialization=True, save_embedding_layers=False)
        else:
            model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        extra(staging)  # stage-specific files beside the weights (e.g. PPO's value head)
