"""Where a stage's trainer reports metrics: TensorBoard event files by default, MLflow when the
config has `tracking.mlflow`, Weights & Biases when it has `tracking.wandb`. Only rank 0 reports,
so a run with N workers logs once.

transformers' own callbacks do the logging (`report_to`); they are configured through the
environment variables they document, set here in the worker process before the trainer starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def report_targets(pipeline: Any, stage_name: str, stage_dir: Path, rank: int) -> list[str]:
    """The `report_to` list for this worker (empty on ranks other than 0)."""
    if rank != 0:
        return []
    targets: list[str] = []
    tracking = pipeline.tracking
    if tracking.tensorboard:
        # transformers 5 reads the TensorBoard folder from $TENSORBOARD_LOGGING_DIR.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(stage_dir / "tensorboard")
        targets.append("tensorboard")
    if tracking.mlflow is not None:
        os.environ["MLFLOW_TRACKING_URI"] = tracking.mlflow.tracking_uri
        if tracking.mlflow.tracking_uri.startswith("file:"):
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless asked; a
            # `file:` URI in the config is that ask (a server or sqlite:// needs nothing).
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        os.environ["MLFLOW_EXPERIMENT_NAME"] = tracking.mlflow.experiment
        os.environ["MLFLOW_TAGS"] = '{"rayft.run": "%s", "rayft.stage": "%s"}' % (stage_dir.parent.name, stage_name)
        os.environ.setdefault("MLFLOW_FLATTEN_PARAMS", "TRUE")
        targets.append("mlflow")
    if tracking.wandb is not None and tracking.wandb.mode != "disabled":
        wandb = tracking.wandb
        os.environ["WANDB_PROJECT"] = wandb.project
        os.environ["WANDB_MODE"] = wandb.mode
        os.environ["WANDB_DIR"] = str(stage_dir)  # an offline run lands in <stage>/wandb/
        os.environ["WANDB_RUN_GROUP"] = wandb.group or stage_dir.parent.name
        os.environ["WANDB_CONSOLE"] = "off"  # Ray already keeps the workers' output
        os.environ["WANDB_SILENT"] = "true"
        if wandb.entity:
            os.environ["WANDB_ENTITY"] = wandb.entity
        if wandb.tags:
            os.environ["WANDB_TAGS"] = ",".join(wandb.tags)
        if wandb.name:
            os.environ["RAYFT_WANDB_NAME"] = f"{wandb.name}/{stage_name}"
        targets.append("wandb")
    return targets


def check_wandb(tracking: Any) -> None:
    """On the driver, before any stage: `tracking.wandb` needs the package, and `online` a key."""
    wandb = getattr(tracking, "wandb", None)
    if wandb is None or wandb.mode == "disabled":
        return
    from rayft.core.errors import ConfigError

    try:
        import wandb as _  # noqa: F401
    except ImportError:
        raise ConfigError("tracking.wandb: the wandb package is not installed (pip install 'rayft[wandb]')") from None
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    logged_in = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")
    if wandb.mode == "online" and not os.environ.get("WANDB_API_KEY") and not logged_in:
        raise ConfigError("tracking.wandb.mode: online needs WANDB_API_KEY in the environment (or `wandb login`); "
                          "set it, or use mode: offline and `wandb sync <stage>/wandb/offline-run-*` later")


def start_wandb_run(targets: list[str] | str | None, run_name: str | None) -> bool:
    """Open the stage's W&B run up front (rank 0), as for MLflow: transformers' WandbCallback then
    logs into it (it only opens one when none is open), and so do a custom loop and the end."""
    if not targets or "wandb" not in targets:
        return False
    import wandb

    tags = [t for t in os.environ.get("WANDB_TAGS", "").split(",") if t]
    wandb.init(project=os.environ["WANDB_PROJECT"], entity=os.environ.get("WANDB_ENTITY") or None,
               name=os.environ.get("RAYFT_WANDB_NAME") or run_name, group=os.environ.get("WANDB_RUN_GROUP"),
               dir=os.environ["WANDB_DIR"], mode=os.environ["WANDB_MODE"], tags=tags or None)
    return True


def end_wandb_run(started: bool, exit_code: int = 0) -> None:
    if started:
        import wandb

        wandb.finish(exit_code=exit_code)


def start_mlflow_run(targets: list[str] | str | None, run_name: str | None) -> bool:
    """Open the stage's MLflow run up front (rank 0), so that training, the final evaluation and a
    custom loop all log into this one run; transformers' callback then leaves ending it to us."""
    if not targets or "mlflow" not in targets:
        return False
    import json

    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
    mlflow.start_run(run_name=run_name, tags=json.loads(os.environ.get("MLFLOW_TAGS", "{}")))
    return True


def end_mlflow_run(started: bool, status: str = "FINISHED") -> None:
    if started:
        import mlflow

        mlflow.end_run(status=status)


def mlflow_run_name(stage_dir: Path) -> str:
    """`<run>/<stage>`: one MLflow run per stage, named after the run directory."""
    return f"{stage_dir.parent.name}/{stage_dir.name}"


class StepLogger:
    """Per-step scalars for stages with their own loop (PPO): the same targets as `report_to`,
    TensorBoard through torch's SummaryWriter and MLflow through its client API."""

    def __init__(self, targets: list[str] | str | None, tensorboard_dir: Path, run_name: str,
                 params: dict[str, Any] | None = None):
        targets = [] if targets in (None, "none") else list(targets)
        self._tb = None
        self._mlflow = None
        self._wandb = None
        self._owns_run = False
        self._owns_wandb = False
        if "tensorboard" in targets:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(tensorboard_dir))
        if "mlflow" in targets:
            import json

            import mlflow

            if mlflow.active_run() is None:  # normally opened by the worker (start_mlflow_run)
                mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
                mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
                mlflow.start_run(run_name=run_name, tags=json.loads(os.environ.get("MLFLOW_TAGS", "{}")))
                self._owns_run = True
            if params:
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            self._mlflow = mlflow
        if "wandb" in targets:
            import wandb

            if wandb.run is None:  # normally opened by the worker (start_wandb_run)
                self._owns_wandb = start_wandb_run(targets, run_name)
            if params:
                wandb.config.update({k: str(v)[:500] for k, v in params.items()}, allow_val_change=True)
            self._wandb = wandb

    def add_scalar(self, key: str, value: float, step: int) -> None:
        if self._tb is not None:
            self._tb.add_scalar(key, value, step)
        if self._mlflow is not None:
            self._mlflow.log_metric(key, float(value), step=step)
        if self._wandb is not None:
            self._wandb.log({key: float(value), "train/global_step": step})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._mlflow is not None and self._owns_run:
            self._mlflow.end_run()
        if self._wandb is not None and self._owns_wandb:
            self._wandb.finish()
