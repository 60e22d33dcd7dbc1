"""Run a pipeline's stages on Ray Train, one `TorchTrainer` per stage.

Driver side: resolve the model once, prepare each stage's data once, launch the workers
(rayft.train.worker), and record the outcome in `<storage>/<run>/<stage>/summary.json`, also
on failure. Each stage starts from the previous stage's adapter. Re-running a named run skips
stages whose summary says `completed`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rayft.config.load import LoadedConfig, dump_yaml
from rayft.core.errors import UserError
from rayft.records.attempts import resume_summary
from rayft.records.rundir import pop_worker_metrics, read_summary, stage_output, write_summary

log = logging.getLogger(__name__)


class StageFailed(UserError):
    """A stage failed; completed stages' outputs are kept. Exit code 1: the input was accepted,
    the run itself failed (a user error found inside a worker still names its field)."""

    exit_code = 1


@dataclass
class RunResult:
    run_dir: Path
    stages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_output(self) -> Path | None:
        return Path(self.stages[-1]["output"]) if self.stages and self.stages[-1].get("output") else None


@dataclass(frozen=True)
class StageCallbacks:
    """Callbacks a caller adds to every stage of a run, each given as a zero-argument factory so that
    every stage (and every worker) gets fresh ones: `ray_train` go into the stage's Ray Train
    RunConfig on the driver; `trainer` are added to each worker's transformers Trainer, so they
    must be importable where the workers run (they travel pickled, by reference)."""

    ray_train: tuple[Callable[[], Any], ...] = ()
    trainer: tuple[Callable[[], Any], ...] = ()


def run_name_for(loaded: LoadedConfig) -> str:
    return loaded.pipeline.run_name or f"{loaded.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_pipeline(loaded: LoadedConfig, address: str | None = None, run_name: str | None = None,
                 started_at: float | None = None, callbacks: StageCallbacks = StageCallbacks(),
                 force: bool = False) -> RunResult:
    """`callbacks`: added to every stage (a Ray Tune trial, rayft.tune.trial, adds the ones that
    report each evaluation to Tune). `force`: run a stage whose memory estimate is over its limit."""
    from rayft.train.memory_plan import check_stage_memory, plan_summary
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.stages import get_stage

    started_at = started_at or time.time()
    pipeline = loaded.pipeline
    run_dir = Path(pipeline.storage.path).expanduser().resolve() / (run_name or run_name_for(loaded))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(pipeline))
    print(f"rayft: run directory {run_dir}", flush=True)

    from rayft.train.onpolicy_pairs import with_onpolicy_pairs

    from rayft.train.rollout_engines import check_rollout_policy, rollout_engine

    for index, stage in enumerate(pipeline.stages):  # e.g. reward functions that must import
        get_stage(stage.type).preflight(stage, index)
        if rollout_engine(pipeline, index) == "vllm":
            check_rollout_policy(pipeline, index)
    from rayft.records.tracking import check_wandb

    check_wandb(pipeline.tracking)  # the package, and a key for online mode: before any stage starts
    model_path = resolve_model(pipeline.model.name, pipeline.model.revision)
    tokenizer = load_tokenizer(model_path, pipeline.model.trust_remote_code, pipeline.model)
    result = RunResult(run_dir)
    previous: Path | None = Path(pipeline.adapter.init_from) if pipeline.adapter.init_from else None
    for index, stage in enumerate(pipeline.stages):
        stage_dir = run_dir / stage.name
        impl = get_stage(stage.type)
        done = read_summary(stage_dir)
        if done and done.get("status") == "completed" and stage_output(stage_dir):
            print(f"rayft: stage '{stage.name}' already completed, skipping", flush=True)
            if impl.produces_policy:
                previous = stage_output(stage_dir)
            result.stages.append(done)
            continue
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "config.yaml").write_text(dump_yaml(pipeline))
        init_adapter = impl.starting_adapter(previous)
        pairs: dict[str, Any] = {}
        if getattr(stage, "pairs", None):  # on-policy pairs from the policy the stage starts from
            ensure_ray(address, pipeline.scaling)  # the pairs are built in a Ray task
            stage, pairs["pairs"] = with_onpolicy_pairs(pipeline, index, stage_dir, init_adapter)
            pipeline = pipeline.model_copy(update={"stages": [*pipeline.stages[:index], stage,
                                                              *pipeline.stages[index + 1:]]})
        data = impl.prepare_data(stage, tokenizer)
        _record_data(stage.name, stage_dir, data)
        plan = check_stage_memory(pipeline, index, model_path, data, address, force)  # before any worker starts
        write_summary(stage_dir, status="running", stage=stage.name, type=stage.type, run_name=run_dir.name,
                      data=data.stats, num_workers=pipeline.scaling.num_workers, error=None,
                      init_adapter=str(init_adapter) if init_adapter else None, memory=plan_summary(plan), **pairs)
        summary = _fit_stage(pipeline, index, stage_dir, data, init_adapter, address, started_at, callbacks, plan,
                             model_path)
        result.stages.append(summary)
        if impl.produces_policy:
            previous = Path(summary["output"])
    return result


def _record_data(name: str, stage_dir: Path, data: Any) -> None:
    """One line of counts; skipped rows, removed duplicates and filtered rows go to files beside the stage."""
    from rayft.data.accounting import account, one_line
    from rayft.data.bad_rows import write_problems
    from rayft.data.dedup import write_removed
    from rayft.data.filters import write_filtered

    counts = account(data.stats)
    data.stats["accounting"] = counts["lines"]  # into summary.json with the rest of the data stats
    print(f"rayft: stage '{name}' data: {one_line(counts['lines'])} (details in summary.json)", flush=True)
    if not counts["adds_up"]:
        print(f"rayft: warning: stage '{name}' data counts do not add up ({'; '.join(counts['problems'])}); "
              f"please report it", flush=True)
    if data.problems:
        write_problems(data.problems, stage_dir / "data" / "skipped_rows.jsonl")
    if data.removed:
        write_removed(data.removed, stage_dir / "data" / "dedup_removed.jsonl")
    if data.filtered:
        write_filtered(data.filtered, stage_dir / "data" / "filtered_rows.jsonl")


def _fit_stage(pipeline, index, stage_dir: Path, data, init_adapter: Path | None, address: str | None,
               started_at: float, callbacks: StageCallbacks, plan: Any = None, model_path: str = "") -> dict[str, Any]:
    from rayft.records.plots import plot_training
    from rayft.train.rollout_engines import start_rollout_engines
    from rayft.train.memory_plan import oom_message, out_of_memory

    stage = pipeline.stages[index]
    t0 = time.time()
    cluster = ensure_ray(address, pipeline.scaling)
    engines = start_rollout_engines(pipeline, index, model_path, local=cluster is None)  # None: in the workers
    try:
        trainer = _trainer(pipeline, index, stage_dir, data, init_adapter, started_at, callbacks,
                           tuple(engines.actors) if engines else ())
        try:
            result = trainer.fit()
            error = result.error
        except KeyboardInterrupt:
            write_summary(stage_dir, status="interrupted", error="interrupted by the user", wall_s=time.time() - t0)
            raise
        except Exception as exc:  # noqa: BLE001 - recorded in summary.json, then re-raised as StageFailed
            error = exc
    finally:
        if engines is not None:
            engines.close()
    if error is not None:
        oom = out_of_memory(error)
        message = oom_message(error, plan, pipeline.scaling.max_failures) if oom else _failure_message(error)
        record_failure(stage_dir, message, time.time() - t0, failure="out_of_memory" if oom else "error")
        raise StageFailed(f"stage '{stage.name}' failed: {message}\n(outputs of earlier stages are kept; "
                          f"details in {stage_dir / 'summary.json'})")
    metrics = pop_worker_metrics(stage_dir)
    output = stage_output(stage_dir)
    plots = plot_training(metrics, stage_dir / "plots")
    return write_summary(stage_dir, status="completed", output=str(output), wall_s=time.time() - t0,
                         plots=[str(p) for p in plots], **metrics, **resume_summary(stage_dir))


def record_failure(stage_dir: Path, message: str, wall_s: float, failure: str = "error") -> None:
    """Mark the stage failed, unless a sweep's scheduler stopped it: stopping a trial removes its
    workers, and the failure that causes here can come before or after the sweep records the stop.
    After: the summary already says stopped (kept). Before: rayft.records.rundir.mark_stopped's
    file outranks this write whenever it lands."""
    if (read_summary(stage_dir) or {}).get("status") == "stopped":
        return
    write_summary(stage_dir, status="failed", error=message, failure=failure, wall_s=wall_s,
                  **resume_summary(stage_dir))


def _trainer(pipeline, index, stage_dir, data, init_adapter, started_at, callbacks: StageCallbacks,
             rollout_engines: tuple = ()):
    import ray.train  # its ScalingConfig is Ray's; rayft's `scaling` section is pipeline.scaling
    from ray.train.torch import TorchTrainer

    from rayft.train.stage_job import JOB_KEY, StageJob
    from rayft.compute.strategy import load_user_deepspeed_config
    from rayft.train.worker import train_stage_worker

    scaling = pipeline.scaling
    stage = pipeline.stages[index]
    resources = dict(scaling.resources_per_worker)
    if scaling.use_gpu:
        resources.setdefault("GPU", 1)
    threads = scaling.threads_per_worker or max(1, int(resources.get("CPU", 1)))
    job = StageJob(
        pipeline=pipeline, stage_index=index, stage_dir=stage_dir, data=data, adapter=stage_adapter(pipeline, init_adapter),
        threads=threads, started_at=started_at, trainer_callbacks=callbacks.trainer, rollout_engines=rollout_engines,
        user_deepspeed=load_user_deepspeed_config(stage.training.deepspeed.config_file,
                                                  f"stages.{index}.training.deepspeed.config_file"),
    )
    return TorchTrainer(
        train_stage_worker,
        train_loop_config={JOB_KEY: job},
        scaling_config=ray.train.ScalingConfig(
            num_workers=(scaling.min_workers, scaling.num_workers) if scaling.elastic else scaling.num_workers,
            elastic_resize_monitor_interval_s=scaling.elastic_check_s,
            use_gpu=scaling.use_gpu, resources_per_worker=resources, placement_strategy=scaling.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name="ray", storage_path=str(stage_dir),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=stage.training.save_total_limit),
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures,
                                                   max_preemption_failures=scaling.max_preemptions),
            callbacks=[make() for make in callbacks.ray_train] + _worker_callbacks(scaling),
        ),
    )


def _worker_callbacks(scaling) -> list:
    """Ray Train callbacks that run in each worker: SIGTERM caught for a checkpoint (rayft.records.sigterm)."""
    if not scaling.checkpoint_on_preemption:
        return []
    from rayft.records.sigterm import SigtermCheckpoint

    return [SigtermCheckpoint()]


def stage_adapter(pipeline, init_adapter: Path | None):
    """The adapter settings a stage trains with: the run's, starting from `init_adapter` (the previous
    policy's output, `adapter.init_from` for the first stage, or None: a fresh adapter). Decided here,
    on the driver, once; the config itself is left as validated."""
    return pipeline.adapter.model_copy(update={"init_from": str(init_adapter) if init_adapter else None})


def ensure_ray(address: str | None, scaling) -> str | None:
    """Connect to `address`, or start a local Ray sized to this machine; fail fast (instead of
    waiting forever) when a local cluster cannot fit the requested workers. Returns the cluster's
    address, None for the local Ray."""
    import ray

    # Inside a Ray job (`ray job submit`, a KubeRay RayJob) Ray sets RAY_ADDRESS: that is an existing
    # cluster, whose autoscaler may still add the workers, so no local fit check.
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        # Worker lines are printed once, as written (Ray Train would also re-log each print).
        os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
        ray.init(address=address, logging_level=logging.WARNING, configure_logging=True)
    if address is not None:
        return address
    fewest = scaling.fewest_workers()  # elastic: the stage starts with what fits, from min_workers up
    need = {k: v * fewest for k, v in scaling.resources_per_worker.items()}
    if scaling.use_gpu:
        need["GPU"] = need.get("GPU", fewest)
    have = ray.cluster_resources()
    short = {k: (v, have.get(k, 0)) for k, v in need.items() if have.get(k, 0) < v}
    if short:
        detail = ", ".join(f"{k}: need {n:g}, have {h:g}" for k, (n, h) in short.items())
        raise UserError(f"scaling: the local Ray cluster cannot fit {fewest} workers ({detail}); "
                        "lower scaling.num_workers / scaling.resources_per_worker or pass --address")
    return None


def _failure_message(error: BaseException) -> str:
    """The root cause, preferring a rayft UserError raised inside a worker."""
    failures = getattr(error, "worker_failures", None) or {}
    for exc in failures.values():
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, UserError):
            return str(cause)
    if failures:
        rank, exc = next(iter(failures.items()))
        text = str(exc).strip().splitlines()
        return f"worker {rank}: {text[-1] if text else type(exc).__name__}"
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
