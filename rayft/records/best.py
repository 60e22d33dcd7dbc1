"""The best evaluation of a stage (`training.best`) and early stopping (`training.early_stopping`).

At every evaluation `BestTracker` (a Trainer callback on every worker: they all see the same
gathered metrics, so they all decide alike) records the metrics in `<stage>/best.json` (rank 0),
and when the watched metric improves, rank 0 saves the weights into `<stage>/best/` (written
aside, then renamed; tagged with their step). With early stopping it ends training after
`patience` evaluations without an improvement of more than `min_delta`.

The record lives in the stage folder, beside the run's other records, so a stage restarted after a
failure (or re-run after the driver died) still knows its best: evaluations after the step it
resumes from are dropped from the record (they are redone), the rest stand. Why not Ray Train's
`CheckpointConfig(checkpoint_score_attribute=...)`: that ranks full checkpoints (optimizer and RNG
state included) and so needs one at every evaluation; the best weights alone are the adapter,
saved only when they improve (docs/stages.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from rayft.core.errors import ConfigError
from rayft.records.rundir import write_json_atomic

BEST_FILE = "best.json"
BEST_DIR = "best"
BEST_TAG = "rayft-best.json"  # inside best/: the step its weights are from


class BestTracker(TrainerCallback):
    def __init__(self, stage_dir: Path, rank: int, metric: str, mode: str, keep_weights: bool,
                 patience: int | None = None, min_delta: float = 0.0,
                 save: Callable[[Any, Path, dict], None] | None = None, log: Callable[[str], None] = print):
        """`save(model, folder, tag)`: write the weights and `tag` (as BEST_TAG) into `folder` at once."""
        self.stage_dir, self.rank, self.metric, self.mode = Path(stage_dir), rank, metric, mode
        self.keep_weights, self.patience, self.min_delta = keep_weights, patience, min_delta
        self.save, self.log = save, log
        self.history: dict[int, dict[str, float]] = {}
        self.stopped_early_at: int | None = None
        record = read_best(self.stage_dir)
        if record:
            self.history = {int(step): metrics for step, metrics in record.get("history", {}).items()}

    # --- the record --------------------------------------------------------------------------------
    def best_step(self, before: int | None = None) -> int | None:
        steps = [s for s in sorted(self.history) if before is None or s <= before]
        best = None
        for step in steps:
            if best is None or self._better(self.history[step][self.metric], self.history[best][self.metric]):
                best = step
        return best

    def evaluations_without_improvement(self) -> int:
        """Evaluations since the last one that beat everything before it by more than min_delta."""
        reference, since = None, 0
        for step in sorted(self.history):
            value = self.history[step][self.metric]
            if reference is None or self._better(value, reference, self.min_delta):
                reference, since = value, 0
            else:
                since += 1
        return since

    def _better(self, value: float, than: float, margin: float = 0.0) -> bool:
        if math.isnan(value):
            return False
        return value < than - margin if self.mode == "min" else value > than + margin

    # --- Trainer events ----------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        # Resumed at state.global_step: later evaluations belong to the attempt that failed; redone.
        self.history = {s: m for s, m in self.history.items() if s <= state.global_step}
        self._write()

    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs):
        metrics = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        if self.metric not in metrics:
            known = ", ".join(sorted(k for k in metrics if k.startswith("eval_"))) or "none"
            raise ConfigError(f"training.best.metric: '{self.metric}' is not among this stage's evaluation metrics "
                              f"({known})")
        step = state.global_step
        previous_best = self.best_step()
        self.history[step] = metrics
        best = self.best_step()
        if self.keep_weights and best == step and best != previous_best and self.rank == 0 and self.save:
            self.save(kwargs.get("model"), self.stage_dir / BEST_DIR, {"step": step, self.metric: metrics[self.metric]})
        self._write()
        if self.patience and self.evaluations_without_improvement() >= self.patience and state.global_step < state.max_steps:
            control.should_training_stop = True
            self.stopped_early_at = step
            if self.rank == 0:
                b = self.best_step()
                self.log(f"[early stopping] step {step}: {self.metric} has not improved by more than {self.min_delta:g} "
                         f"in {self.patience} evaluations (best {self.history[b][self.metric]:.4g} at step {b}); "
                         "stopping")
            self._write()

    def _write(self) -> None:
        if self.rank != 0:
            return
        write_json_atomic(self.stage_dir / BEST_FILE, {
            "metric": self.metric, "mode": self.mode, "best_step": self.best_step(),
            "stopped_early_at": self.stopped_early_at,
            "history": {str(s): m for s, m in sorted(self.history.items())}})

    # --- the outcome -------------------------------------------------------------------------------
    def summary(self, last_metrics: dict[str, float]) -> dict[str, Any]:
        """summary.json's `best` block, and the evaluation figures of what is published."""
        best = self.best_step()
        last_step = max(self.history) if self.history else None
        # The saved weights must be the recorded best's (a resumed stage whose redone evaluations
        # came out differently could leave others behind): else the last weights are published.
        published = self.keep_weights and best is not None and self.best_weights_step() == best
        out: dict[str, Any] = {"best": {
            "metric": self.metric, "mode": self.mode, "step": best,
            "value": self.history[best][self.metric] if best is not None else None,
            "last_step": last_step, "last_value": last_metrics.get(self.metric),
            "published": "best" if published else "last"}}
        if self.stopped_early_at is not None:
            out["stopped_early_at"] = self.stopped_early_at
        if out["best"]["published"] == "best":  # the published weights' own held-out figures
            out.update({k: v for k, v in self.history[best].items() if k.startswith("eval_")})
        return out

    def best_weights_step(self) -> int | None:
        """The step the saved best/ weights are from (None: none saved)."""
        try:
            return int(json.loads((self.stage_dir / BEST_DIR / BEST_TAG).read_text())["step"])
        except (OSError, ValueError, KeyError):
            return None


def read_best(stage_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(stage_dir) / BEST_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
