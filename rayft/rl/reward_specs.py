"""Resolve reward specs (`module:function` or `stage:<name>`) into callables
`f(prompts, completions, **row_fields) -> list[float]`, shared by the RL stages. A `stage:` spec
is scored by the reward model the caller knows how to load (`load_reward_model`, e.g.
rayft.stages.reward.reward_model_fn): this layer sits below the stages. (The built-in reward
functions that specs name are in rayft.rewards.)"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from rayft.errors import ConfigError

RewardFn = Callable[..., list[float]]


def resolve_reward(spec: str, run_dir: Path | None = None, field: str = "rewards",
                   load_reward_model: Callable[[Path], RewardFn] | None = None) -> RewardFn:
    if spec.startswith("stage:"):
        if load_reward_model is None:
            raise ValueError(f"resolve_reward('{spec}') needs load_reward_model to score with a reward stage")
        return _reward_model(spec[len("stage:"):], run_dir, field, load_reward_model)
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


def _reward_model(stage_name: str, run_dir: Path | None, field: str,
                  load_reward_model: Callable[[Path], RewardFn]) -> RewardFn:
    from rayft.train.rundir import stage_output

    output = stage_output(run_dir / stage_name) if run_dir else None
    if output is None:
        raise ConfigError(f"{field}: 'stage:{stage_name}' names no completed stage of this run "
                          "(a reward stage must come earlier in `stages`)")
    return load_reward_model(output)
