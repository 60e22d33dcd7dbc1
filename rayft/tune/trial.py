"""What one trial runs: the sampled config, trained by the same launcher as `rayft train`.

A trial is a Ray Tune function trainable that acts as the driver of one Ray Train run
(`rayft.train.launch.run_pipeline` with `tune_callbacks()`): the Train workers report the eval
metrics at every `training.eval_steps` (EvalReportCallback) and Ray's `TuneReportCallback`
forwards rank 0's report to Tune, where the scheduler may stop the trial. The trial's run
directory is `<sweep dir>/trial_<id>/` (config.yaml, <stage>/summary.json, adapter/ ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from rayft.config.load import LoadedConfig, load_pipeline, with_values
from rayft.train.launch import StageCallbacks


@dataclass
class SweepSpec:
    """What every trial shares: the config as read (before validation, --set applied), its file
    (relative paths resolve against its folder), the search space and the sweep directory."""

    raw: dict[str, Any]
    source: Path | None
    space: dict[str, str]
    sweep_dir: Path
    scheduler: str = "asha"  # pbt trials train in segments (rayft.tune.pbt) ...
    perturbation_interval: int = 0  # ... of this many optimizer steps


def trial_dir_name(trial_id: str) -> str:
    return f"trial_{trial_id}"


def trial_config(spec: SweepSpec, params: dict[str, Any], label: str = "trial") -> LoadedConfig:
    """The base config with `params` ({dotted path: value}) set, validated, the tune section
    dropped; a value that breaks the config raises ConfigError naming the field."""
    raw = {key: value for key, value in spec.raw.items() if key != "tune"}
    return load_pipeline(spec.source, raw=raw, values=params, label=label)


def run_trial(params: dict[str, Any], spec: SweepSpec) -> None:
    """Ray Tune's trainable: one Ray Train run of the sampled config."""
    import ray.tune

    from rayft.train.launch import run_pipeline
    from rayft.records.rundir import read_summary, summary_scalars

    trial_id = ray.tune.get_context().get_trial_id()
    sampled = {path: params[path] for path in spec.space}
    label = f"trial {trial_id} ({_short(sampled)})"
    sampled_config = trial_config(spec, sampled, label=label)
    # Tune needs the metric in every report; a checkpoint report between evaluations lacks it.
    no_checkpoints = {f"stages.{i}.training.save_steps": None for i in range(len(sampled_config.pipeline.stages))}
    no_checkpoints["scaling.checkpoint_on_preemption"] = False
    grouped = {}
    if sampled_config.pipeline.tracking.wandb is not None and not sampled_config.pipeline.tracking.wandb.group:
        grouped = {"tracking.wandb.group": spec.sweep_dir.name}  # one W&B run per trial, grouped by sweep
    pipeline = with_values(sampled_config.pipeline, {"storage.path": str(spec.sweep_dir), **no_checkpoints, **grouped},
                           label)
    loaded = LoadedConfig(pipeline=pipeline, source=spec.source)
    stage = pipeline.stages[0]
    stage_dir = spec.sweep_dir / trial_dir_name(trial_id) / stage.name
    done = read_summary(stage_dir)
    if done and done.get("status") == "completed":
        # Finished before the sweep was interrupted, but Tune's last saved state still had it
        # running: report the recorded result instead of training again.
        ray.tune.report({**summary_scalars(done), "resumed_from_summary": True})
        return
    if spec.scheduler == "pbt":
        from rayft.tune.pbt import run_pbt_trial

        run_pbt_trial(loaded, spec.sweep_dir / trial_dir_name(trial_id), trial_id, sampled,
                      spec.perturbation_interval)
        return
    run_pipeline(loaded, run_name=trial_dir_name(trial_id), callbacks=tune_callbacks())


def tune_callbacks() -> StageCallbacks:
    """What makes a Ray Train run report to Tune: every worker reports each evaluation to Ray Train,
    and Ray's TuneReportCallback forwards rank 0's report to the trial."""
    from ray.tune.integration.ray_train import TuneReportCallback

    return StageCallbacks(ray_train=(TuneReportCallback,), trainer=(EvalReportCallback,))


class EvalReportCallback(TrainerCallback):
    """Report every evaluation to Ray Train (hence to Tune) with the optimizer step, so that a
    scheduler can compare trials at the same step. Runs on every worker: Ray Train expects
    each worker to report."""

    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs):
        import ray.train

        ray.train.report({**(metrics or {}), "global_step": state.global_step})


def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                     for k, v in params.items())
