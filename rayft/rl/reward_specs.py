"""Resolve reward specs (`module:function` or `stage:<name>`) into callables
`f(prompts, completions, **row_fields) -> list[float]`, shared by the RL stages and the pair
builder. A `stage:` spec is scored by that stage's reward model (rayft.models.reward_model). (The
built-in reward functions that specs name are in rayft.rewards.)"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from rayft.core.errors import ConfigError

RewardFn = Callable[..., list[float]]


def resolve_reward(spec: str, run_dir: Path | None = None, field: str = "rewards") -> RewardFn:
    if spec.startswith("stage:"):
        return _reward_model(spec[len("stage:"):], run_dir, field)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{field}: '{spec}' is neither `module:function` nor `stage:<name>`")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{field}: cannot import '{module_name}' for reward '{spec}' ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{field}: '{module_name}' has no function '{attr}'")
    return fn


def _reward_model(stage_name: str, run_dir: Path | None, field: str) -> RewardFn:
    from rayft.models.reward_model import reward_model_fn
    from rayft.records.rundir import stage_output

    output = stage_output(run_dir / stage_name) if run_dir else None
    if output is None:
        raise ConfigError(f"{field}: 'stage:{stage_name}' names no completed stage of this run "
                          "(a reward stage must come earlier in `stages`)")
    return reward_model_fn(output)


def check_importable(specs: list[str], field: str) -> None:
    """Import every `module:function` spec now (a `stage:` spec needs the run's earlier stage, and
    was checked when the config loaded): a run stops before its first stage, not after the ones
    before, on a reward function that cannot be imported. `rouge_l` is built in."""
    for spec in specs:
        if spec != "rouge_l" and not spec.startswith("stage:"):
            resolve_reward(spec, field=field)
