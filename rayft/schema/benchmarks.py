"""`eval.benchmarks`: standard benchmarks through lm-evaluation-harness (docs/evaluation.md)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from rayft.schema.base import Strict


class BenchmarksConfig(Strict):
    tasks: list[str] = Field(
        min_length=1, description="lm-evaluation-harness task, group or tag names (`lm_eval ls tasks`), rayft's "
        "offline copies (rayft_mmlu, rayft_mmlu_<subject>, rayft_arc_easy, rayft_arc_challenge, rayft_hellaswag, "
        "rayft_truthfulqa_mc1, rayft_gsm8k; they read eval.benchmarks.data_dir), or task YAML files / folders.")
    data_dir: str | None = Field(None, description="Folder of the local benchmark data that rayft_* tasks read "
                                 "(layout in docs/evaluation.md).")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples per question (default: each "
                                    "task's own).")
    limit: int | None = Field(None, ge=1, description="Questions per task (default: all); a limited score is "
                              "a sample, said so in the report.")
    batch_size: int = Field(8, ge=1, description="Requests scored together.")
    bootstrap_iters: int = Field(10000, ge=0, description="lm-eval's bootstrap iterations for the stderr of "
                                 "non-mean metrics (0: none).")
    num_cpus: float = Field(1, gt=0, description="CPUs per Ray task (one task per model; also its torch threads).")
    num_gpus: float = Field(0, ge=0, description="GPUs per Ray task (0 on CPU-only clusters).")

    @model_validator(mode="before")
    @classmethod
    def _names_only(cls, value: Any) -> Any:
        """`eval.benchmarks: [a, b]` and `eval.benchmarks: a,b` are shorthand for `tasks`."""
        if isinstance(value, str):
            return {"tasks": [t.strip() for t in value.split(",") if t.strip()]}
        if isinstance(value, list):
            return {"tasks": value}
        return value

    @field_validator("tasks")
    @classmethod
    def _no_blank(cls, value: list[str]) -> list[str]:
        if any(not t.strip() for t in value):
            raise ValueError("a task name is empty")
        return [t.strip() for t in value]
