"""Population based training (`tune.scheduler: pbt`) for rayft trials.

Ray Tune's PBT exploits by copying a better trial's *Tune checkpoint* into a worse trial and
restarting it with perturbed values. A rayft trial normally reports through Ray Train only (no
Tune checkpoints), so under PBT a trial trains in segments of `perturbation_interval` optimizer
steps instead: each segment is one Ray Train run of the stage that continues the LoRA adapter of
the segment before (`adapter.init_from`), evaluates at its end, and hands Tune the adapter as the
trial's checkpoint. When PBT exploits, the trial restarts from the donor's adapter and step with
the new values. What a segment does not carry over, by design: the optimizer state (a fresh
AdamW per segment, as PBT changes the learning rate anyway) and the data position (each segment
reshuffles with its own seed, `training.seed + start step`).

Layout of a PBT trial: `<sweep>/trial_<id>/segments/g<restores>-step<start>-<end>/<stage>/` per segment, and
`<sweep>/trial_<id>/<stage>/` (summary.json, adapter/) once the trial reaches max_steps, plus
`pbt_schedule.json`: the values each segment trained with, and where exploits happened.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from rayft.config.load import LoadedConfig, with_values
from rayft.core.errors import ConfigError
from rayft.records.rundir import read_summary, stage_output, summary_scalars, write_json_atomic, write_summary

STATE_FILE = "pbt_state.json"  # in a Tune checkpoint: {"global_step", "trial_id", "params", "metrics"}
# Searchable under PBT: training values a running trial can change between segments. Not the
# adapter's shape (a donor's adapter must load into every trial) nor the step plan PBT relies on.
FIXED_TRAINING = {"max_steps", "epochs", "eval_steps", "save_steps", "logging_steps", "save_total_limit",
                  "lr_scheduler", "warmup_ratio", "strategy"}


def check_pbt(pipeline) -> None:
    """Refuse what PBT in rayft cannot do, naming the field."""
    tune, stage = pipeline.tune, pipeline.stages[0]
    if tune.search_alg == "optuna":
        raise ConfigError("tune.search_alg: pbt starts its population from random samples of the search space "
                          "and then perturbs them itself; use search_alg random (or grid)")
    for dotted in tune.search_space:
        head, _, rest = dotted.partition(".")
        if head != "training" or rest.split(".")[0] in FIXED_TRAINING:
            raise ConfigError(f"tune.search_space.{dotted}: pbt can only perturb training values a running trial "
                              "can change (e.g. training.lr, training.weight_decay, training.batch_size); a donor's "
                              "adapter must load into every trial, so adapter shape and the step plan stay fixed")
    if pipeline.adapter.type != "lora":
        raise ConfigError("adapter.type: pbt copies LoRA adapters between trials; a full fine-tune is not supported")
    if stage.training.lr_scheduler != "constant" or stage.training.warmup_ratio:
        raise ConfigError("training.lr_scheduler: pbt changes the learning rate while trials run, so each segment "
                          "trains at a constant rate; set training.lr_scheduler: constant and warmup_ratio: 0")
    interval = perturbation_interval(pipeline)
    if interval >= stage.training.max_steps:
        raise ConfigError(f"tune.perturbation_interval: {interval} steps leaves no room to perturb before "
                          f"training.max_steps ({stage.training.max_steps}); make it smaller")


def perturbation_interval(pipeline) -> int:
    return pipeline.tune.perturbation_interval or pipeline.stages[0].training.eval_steps


class StepBoundedPBT(PopulationBasedTraining):
    """Tune's PBT, except that a trial reporting `max_steps` is left alone: it has finished, so it is
    neither exploited nor paused. (Tune's PBT has no notion of an end: synchronous PBT would pause it
    to wait for a perturbation step no trial ever reaches, and restart it forever.)"""

    def __init__(self, max_steps: int, **kwargs: Any):
        super().__init__(**kwargs)
        self._max_steps = max_steps

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        if result.get(self._time_attr, 0) >= self._max_steps:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def pbt_scheduler(pipeline, space: dict[str, Any]) -> StepBoundedPBT:
    tune = pipeline.tune
    return StepBoundedPBT(
        max_steps=pipeline.stages[0].training.max_steps,
        time_attr="global_step", perturbation_interval=perturbation_interval(pipeline),
        hyperparam_mutations={path: _mutation(domain) for path, domain in space.items()},
        quantile_fraction=tune.quantile_fraction, resample_probability=tune.resample_probability,
        synch=tune.synchronous,
    )  # Tune's PBT draws its perturbations from Python's global `random`: they are not seeded


def _mutation(domain: Any) -> Any:
    """Tune's grid_search dict is not a distribution; PBT resamples from its values as a list."""
    if isinstance(domain, dict) and "grid_search" in domain:
        return list(domain["grid_search"])
    return domain


def run_pbt_trial(loaded, trial_dir: Path, trial_id: str, params: dict[str, Any], interval: int) -> None:
    """Train the trial's stage in segments, reporting each segment's metrics and adapter to Tune."""
    import ray.tune

    from rayft.train.launch import run_pipeline

    pipeline = loaded.pipeline
    stage = pipeline.stages[0]
    max_steps = stage.training.max_steps
    step, adapter, origin, restored_metrics = _restore(trial_dir)
    schedule_path = trial_dir / "pbt_schedule.json"
    schedule = json.loads(schedule_path.read_text()) if schedule_path.is_file() else []
    if origin:
        schedule.append({"event": "restored", "at_step": step, "from_trial": origin, "params": params})
    generation = sum(e["event"] == "restored" for e in schedule)  # keeps segment folders apart after a restore
    while step < max_steps:
        start, end = step, min(step + interval, max_steps)
        seg = LoadedConfig(pipeline=_segment_config(pipeline, trial_dir, adapter, start, end), source=loaded.source)
        run = run_pipeline(seg, run_name=f"g{generation}-step{start:06d}-{end:06d}")
        summary = run.stages[-1]
        step, adapter = end, Path(summary["output"])
        schedule.append({"event": "segment", "steps": [start, end], "params": params, "metrics": _scalars(summary)})
        write_json_atomic(schedule_path, schedule)
        if step >= max_steps:
            _finish(trial_dir / stage.name, run.run_dir / stage.name, step, schedule)
        with tempfile.TemporaryDirectory(prefix="rayft-pbt-") as tmp:
            shutil.copytree(adapter, Path(tmp) / "adapter")
            (Path(tmp) / STATE_FILE).write_text(json.dumps({"global_step": step, "trial_id": trial_id,
                                                            "params": params, "metrics": _scalars(summary)}))
            ray.tune.report({**_scalars(summary), "global_step": step},
                            checkpoint=ray.tune.Checkpoint.from_directory(tmp))
    if origin and read_summary(trial_dir / stage.name) is None:
        # Restored at max_steps (PBT exploited on the final result): the donor's final adapter is this
        # trial's result, as PBT means a weak trial to become a copy of a strong one.
        write_json_atomic(schedule_path, schedule)
        final = trial_dir / stage.name
        shutil.copytree(adapter, final / "adapter", dirs_exist_ok=True)
        write_summary(final, status="completed", stage=stage.name, global_step=step, output=str(final / "adapter"),
                      pbt_segments=0, pbt_final_from=origin, **restored_metrics)
        ray.tune.report({**restored_metrics, "global_step": step})


def _segment_config(pipeline, trial_dir: Path, adapter: Path | None, start: int, end: int):
    """The trial's config for the segment of steps [start, end): it continues `adapter`, evaluates
    once at its end and reshuffles with its own seed (`training.seed + start`)."""
    training, steps = pipeline.stages[0].training, end - start
    return with_values(pipeline, {
        "storage.path": str(trial_dir / "segments"), "adapter.init_from": str(adapter) if adapter else None,
        "stages.0.training.max_steps": steps, "stages.0.training.eval_steps": steps,
        "stages.0.training.save_steps": None, "stages.0.training.logging_steps": min(training.logging_steps, steps),
        "stages.0.training.seed": training.seed + start,
    }, label=f"pbt segment {start}-{end}")


def _restore(trial_dir: Path) -> tuple[int, Path | None, str | None, dict[str, Any]]:
    """The step, adapter, donor trial and donor metrics of the checkpoint Tune starts this trial from
    (PBT's exploit, or a resumed sweep); (0, None, None, {}) for a fresh trial. The adapter is copied out of the checkpoint,
    which Tune may delete once the trial moves on."""
    import ray.tune

    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        return 0, None, None, {}
    with checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
        step = int(state["global_step"])
        target = trial_dir / "restored" / f"step{step:06d}-from-{state['trial_id']}"
        if not target.is_dir():
            shutil.copytree(Path(folder) / "adapter", target.with_suffix(".tmp"), dirs_exist_ok=True)
            target.with_suffix(".tmp").rename(target)
    return step, target, state["trial_id"], state.get("metrics", {})


def _finish(final_stage_dir: Path, last_segment_dir: Path, step: int, schedule: list[dict[str, Any]]) -> None:
    """The trial's stage folder, as a plain run has it: the final adapter and a summary whose
    global_step counts every segment."""
    output = stage_output(last_segment_dir)
    final_stage_dir.mkdir(parents=True, exist_ok=True)
    if output is not None:
        shutil.copytree(output, final_stage_dir / output.name, dirs_exist_ok=True)
    last = read_summary(last_segment_dir) or {}
    write_summary(final_stage_dir, **{**last, "status": "completed", "global_step": step,
                                      "output": str(final_stage_dir / "adapter"), "pbt_segments": len(
                                          [e for e in schedule if e["event"] == "segment"])})


def _scalars(summary: dict[str, Any]) -> dict[str, Any]:
    """A segment's scalar figures without its own global_step (a trial reports the global one)."""
    return {k: v for k, v in summary_scalars(summary).items() if k != "global_step"}
