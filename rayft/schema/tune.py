"""The `tune:` section of the YAML: what to search, how to pick and stop trials.

The search space maps a dotted config path to a compact domain,
e.g. `adapter.r: choice[4, 8, 16]` or `training.lr: loguniform[1e-5, 1e-3]` (see
`rayft.schema.search_space`). Each domain is parsed here; whether each path names a real field is checked
by `Pipeline`, which knows the whole schema, and every value a domain can produce is checked by `rayft tune` before
any trial starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from rayft.schema.base import Strict
from rayft.schema.search_space import parse_domain


class TuneConfig(Strict):
    name: str | None = Field(
        None, description="Sweep directory name under storage.path (default: the config file's name). "
        "Re-running with the same name resumes the sweep; finished trials are not run again.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    search_space: dict[str, str] = Field(
        description="Dotted config path -> domain: `choice[a, b, ...]`, `grid[a, b, ...]`, "
        "`uniform[low, high]`, `loguniform[low, high]`, `randint[low, high]` (both ends included). "
        "E.g. {adapter.r: 'choice[4, 8, 16]', training.lr: 'loguniform[1e-5, 1e-3]'}.", min_length=1)
    metric: str = Field("eval_loss", description="The evaluation metric to optimise (an eval_* metric: trials "
                        "report at every training.eval_steps, on the held-out rows).")
    mode: Literal["min", "max"] = Field("min", description="Minimise or maximise `metric`.")
    num_samples: int | None = Field(
        None, ge=1, description="Trials to sample (default 8); with search_alg grid: how many times the "
        "whole grid runs (default 1).")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials at once (default, and upper bound: as many as the cluster fits, "
        "each trial needing scaling.num_workers x scaling.resources_per_worker).")
    search_alg: Literal["optuna", "random", "grid"] = Field(
        "optuna", description="`optuna` (TPE, seeded), `random` (seeded random sampling; grid[...] entries "
        "are crossed with the samples), `grid` (every combination of grid/choice values).")
    scheduler: Literal["asha", "hyperband", "pbt", "none"] = Field(
        "asha", description="`asha` (async successive halving: stops weak trials early), `hyperband` (ASHA "
        "with several brackets), `pbt` (population based training: weak trials continue from a strong trial's "
        "adapter with perturbed training values; see docs/tune.md), `none` (every trial runs to the end).")
    grace_period: int | None = Field(
        None, ge=1, description="asha/hyperband: optimizer steps before a trial can be stopped "
        "(default: training.eval_steps).")
    reduction_factor: float = Field(2, gt=1, description="asha/hyperband: keep the best 1/reduction_factor "
                                    "of the trials at each rung.")
    brackets: int | None = Field(None, ge=1, description="asha/hyperband: brackets (default 1 for asha, "
                                 "3 for hyperband).")
    perturbation_interval: int | None = Field(
        None, ge=1, description="pbt: optimizer steps between perturbations; each trial trains in segments of "
        "this length (default: training.eval_steps).")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="pbt: the bottom fraction of trials that "
                                     "copy one of the top fraction.")
    resample_probability: float = Field(0.25, ge=0, le=1, description="pbt: chance that a perturbed value is "
                                        "drawn afresh from the search space instead of scaled (x0.8 / x1.2).")
    synchronous: bool = Field(False, description="pbt: perturb only once every trial has reached the step "
                              "(the same decisions whatever the timing; trials wait for the slowest).")
    seed: int = Field(42, description="Seed of the search algorithm's sampling.")
    max_failures: int = Field(0, ge=0, description="Retries of a failed trial (from scratch).")

    @field_validator("search_space")
    @classmethod
    def _domains_parse(cls, space: dict[str, str]) -> dict[str, str]:
        problems = []
        for path, spec in space.items():
            try:
                parse_domain(spec)
            except ValueError as exc:
                problems.append(f"'{path}': {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return space

    def resolved_num_samples(self) -> int:
        return self.num_samples or (1 if self.search_alg == "grid" else 8)
