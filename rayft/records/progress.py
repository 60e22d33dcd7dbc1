"""Trainer callbacks on the workers: compact progress lines from rank 0 plus the figures that go
into summary.json (loss history, tokens/s, time of the first optimizer step), and rank 0's
`<stage>/progress.json` (rayft.records.attempts folds it into summary.json on the driver)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rayft.records.attempts import PROGRESS_FILE
from rayft.records.rundir import write_json_atomic


PREFERENCE_LOGS = {"logps_chosen": "logps/chosen", "logps_rejected": "logps/rejected",
                   "margin": "rewards/margins", "accuracy": "rewards/accuracies"}


class ProgressCallback(TrainerCallback):
    def __init__(self, stage: str, started_at: float):
        self.stage = stage
        self.started_at = started_at  # wall clock when the command started (driver)
        self.first_step_at: float | None = None
        self.train_started_at: float | None = None
        self.loss_history: list[tuple[int, float]] = []
        self.eval_history: list[tuple[int, float]] = []
        self.lr_history: list[tuple[int, float]] = []
        # Preference stages (TRL's logs): the chosen and rejected answers' log-probs per logged step,
        # with the reward margin and accuracy; a falling chosen log-prob is the classic DPO failure.
        self.preference_history: list[dict[str, float]] = []
        self.num_tokens: float = 0.0
        # (wall clock, tokens so far) at the first and the latest log: throughput after the first
        # logged step leaves out one-off warm-up (kernel selection, allocator growth, DeepSpeed set-up).
        self.first_log: tuple[float, float] | None = None
        self.last_log: tuple[float, float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_started_at = time.time()
        # Resumed from a checkpoint: its trainer state holds the losses logged before it.
        for log in state.log_history:
            if "loss" in log:
                self.loss_history.append((log["step"], float(log["loss"])))
            if "eval_loss" in log:
                self.eval_history.append((log["step"], float(log["eval_loss"])))

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step_at is None:
            self.first_step_at = time.time()

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        logs = logs or {}
        # TRL logs NaN tokens for packed rows (it reads their 4-D attention mask); the stage's summary
        # counts those from the rows instead (rayft.stages.sft), so the progress line shows none.
        if "num_tokens" in logs and math.isfinite(float(logs["num_tokens"])):
            self.num_tokens = float(logs["num_tokens"])
            self.last_log = (time.time(), self.num_tokens)
            self.first_log = self.first_log or self.last_log
        if "loss" in logs:
            self.loss_history.append((state.global_step, float(logs["loss"])))
        if "eval_loss" in logs:
            self.eval_history.append((state.global_step, float(logs["eval_loss"])))
        if "learning_rate" in logs:
            self.lr_history.append((state.global_step, float(logs["learning_rate"])))
        if "logps/chosen" in logs and "logps/rejected" in logs:
            self.preference_history.append({"step": state.global_step, **{
                name: float(logs[key]) for name, key in PREFERENCE_LOGS.items() if key in logs}})
        if not state.is_world_process_zero or not ({"loss", "eval_loss"} & set(logs)):
            return
        elapsed = time.time() - (self.train_started_at or time.time())
        parts = [f"[{self.stage}] step {state.global_step}/{state.max_steps}"]
        for key in ("loss", "eval_loss", "learning_rate", "logps/chosen", "logps/rejected"):
            if key in logs:
                parts.append(f"{key} {logs[key]:.4g}")
        if self.num_tokens and elapsed > 0:
            parts.append(f"{self.num_tokens / elapsed:,.0f} tok/s")
        print("  ".join(parts), flush=True)

    def figures(self, train_runtime: float) -> dict[str, Any]:
        return {
            "loss_history": self.loss_history,
            "eval_loss_history": self.eval_history,
            "lr_history": self.lr_history,
            **({"preference_history": self.preference_history} if self.preference_history else {}),
            "num_tokens": self.num_tokens,
            "tokens_per_s": self.num_tokens / train_runtime if train_runtime > 0 else None,
            "steady_tokens_per_s": self._steady_tokens_per_s(),
            "time_to_first_step_s": (self.first_step_at - self.started_at) if self.first_step_at else None,
        }

    def _steady_tokens_per_s(self) -> float | None:
        """Tokens/s between the first and the latest log (None with fewer than two logs)."""
        if not self.first_log or not self.last_log or self.last_log[0] <= self.first_log[0]:
            return None
        return (self.last_log[1] - self.first_log[1]) / (self.last_log[0] - self.first_log[0])


class ProgressRecorder(TrainerCallback):
    """Rank 0: the last finished optimizer step and the last logged losses, in
    `<stage>/progress.json` (one small atomic write per step and per log)."""

    KEEP_LOSSES = 64

    def __init__(self, stage_dir: Path, attempt: int | None):
        self.path, self.attempt = stage_dir / PROGRESS_FILE, attempt
        self.losses: list[tuple[int, float]] = []

    def _write(self, state) -> None:
        write_json_atomic(self.path, {"attempt": self.attempt, "global_step": state.global_step,
                                      "max_steps": state.max_steps, "time": time.time(), "losses": self.losses})

    def on_step_end(self, args, state, control, **kwargs):
        self._write(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses = [*self.losses, (state.global_step, float(logs["loss"]))][-self.KEEP_LOSSES:]
            self._write(state)
