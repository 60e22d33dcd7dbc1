"""Where a stage's trainer reports metrics: TensorBoard event files by default, MLflow when the
config has `tracking.mlflow`. Only rank 0 reports, so a run with N workers logs once.

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
    return targets


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
        self._owns_run = False
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

    def add_scalar(self, key: str, value: float, step: int) -> None:
        if self._tb is not None:
            self._tb.add_scalar(key, value, step)
        if self._mlflow is not None:
            self._mlflow.log_metric(key, float(value), step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._mlflow is not None and self._owns_run:
            self._mlflow.end_run()
