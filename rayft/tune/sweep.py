"""`rayft tune`: check the sweep, plan its resources, run (or resume) it with Ray Tune, and
write the results.

Resume: Ray Tune saves the experiment state (trials, their status, the searcher's state) in the
sweep directory, and `Tuner.restore` continues it: finished trials keep their results, unfinished
ones start again (a trial has no mid-run checkpoint), errored ones are retried. Tune saves its state
every few seconds, so a trial that finished just before a hard kill may still be "running" in
that state; its run directory then holds a completed stage, and the trial reports that result
instead of training again (rayft.tune.trial.run_trial).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from rayft.config.load import LoadedConfig, dump_yaml, load_pipeline
from rayft.core.errors import ConfigError, UserError
from rayft.schema.search_space import Domain, parse_domain
from rayft.tune.trial import SweepSpec, run_trial, trial_config, trial_dir_name

STATE_CONFIG = "sweep_config.yaml"  # the config the sweep was started with (resume must match)
TRIAL_MEMORY = 256 * 2**20  # what a trial's driver process reserves; its workers reserve the rest


class SweepInterrupted(UserError):
    exit_code = 130


class SweepFailed(UserError):
    exit_code = 1


def check_sweep_data(spec: SweepSpec) -> None:
    """Prepare the base config's data once on the driver: a bad file or row fails here with its
    file:line (exit 2) instead of in every trial. Also resolves (and converts) the model once."""
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.stages import get_stage

    pipeline = trial_config(spec, {}, label="config").pipeline
    tokenizer = load_tokenizer(resolve_model(pipeline.model.name, pipeline.model.revision),
                               pipeline.model.trust_remote_code, pipeline.model)
    get_stage(pipeline.stages[0].type).prepare_data(pipeline.stages[0], tokenizer)


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
               name: str | None = None) -> tuple[LoadedConfig, SweepSpec]:
    """Validate the config and its `tune:` section, and every value the search space can give."""
    loaded = load_pipeline(path, overrides)
    source, raw = loaded.source, loaded.raw
    pipeline, tune = loaded.pipeline, loaded.pipeline.tune
    if tune is None:
        raise ConfigError(f"{source}: no `tune:` section; add one with a search_space (see docs/tune.md)")
    _check_plan(loaded)
    sweep_name = name or tune.name or source.stem
    sweep_dir = Path(pipeline.storage.path).expanduser().resolve() / sweep_name
    spec = SweepSpec(raw=raw, source=source, space=dict(tune.search_space), sweep_dir=sweep_dir,
                     scheduler=tune.scheduler)
    if tune.scheduler == "pbt":
        from rayft.tune.pbt import perturbation_interval

        spec.perturbation_interval = perturbation_interval(pipeline)
    for dotted, text in tune.search_space.items():
        for value in parse_domain(text).values_to_check():
            try:
                trial_config(spec, {dotted: value}, label="config")
            except ConfigError as exc:
                raise ConfigError(f"tune.search_space.{dotted}: the value {value!r} gives an invalid config:\n"
                                  f"{exc}") from None
    return loaded, spec


def _check_plan(loaded: LoadedConfig) -> None:
    pipeline, tune = loaded.pipeline, loaded.pipeline.tune
    if len(pipeline.stages) != 1:
        names = ", ".join(s.name for s in pipeline.stages)
        raise ConfigError(f"stages: a sweep tunes one stage; this config has {len(pipeline.stages)} ({names}). "
                          "Sweep a one-stage config, then chain the best one with later stages")
    stage = pipeline.stages[0]
    if not tune.metric.startswith("eval_"):
        raise ConfigError(f"tune.metric: '{tune.metric}' is not an evaluation metric; trials report at every "
                          "evaluation, so the metric must be one of them (eval_loss, or another eval_* metric)")
    if stage.data.eval_path is None and stage.data.eval_split == 0:
        raise ConfigError(f"data.eval_split: tune.metric '{tune.metric}' needs held-out rows "
                          "(data.eval_split > 0 or data.eval_path)")
    if stage.training.eval_steps is None:
        raise ConfigError(f"training.eval_steps: tune.metric '{tune.metric}' is reported at every evaluation; "
                          "set training.eval_steps so the scheduler sees it during training")
    if tune.scheduler != "none" and stage.training.max_steps < 1:
        raise ConfigError(f"training.max_steps: scheduler '{tune.scheduler}' measures trials in optimizer steps; "
                          "set training.max_steps (or tune.scheduler: none)")
    domains = {p: parse_domain(s) for p, s in tune.search_space.items()}
    for dotted, domain in domains.items():
        if tune.search_alg == "optuna" and domain.kind == "grid":
            raise ConfigError(f"tune.search_space.{dotted}: grid[...] needs search_alg grid or random; Optuna "
                              "samples (use choice[...])")
        if tune.search_alg == "grid" and domain.kind not in ("grid", "choice"):
            raise ConfigError(f"tune.search_space.{dotted}: search_alg grid needs listed values "
                              f"(grid[...] or choice[...]), not {domain.kind}[...]")
    if tune.scheduler == "pbt":
        from rayft.tune.pbt import check_pbt

        check_pbt(pipeline)


def param_space(spec: SweepSpec, search_alg: str) -> dict[str, Any]:
    domains = {p: parse_domain(s) for p, s in spec.space.items()}
    return {p: (d.as_grid() if search_alg == "grid" else d).to_tune() for p, d in domains.items()}


def plan_concurrency(pipeline, cluster: dict[str, float]) -> tuple[int, dict[str, float]]:
    """Trials that fit the cluster at once (each needs all its Train workers) and one trial's need."""
    scaling = pipeline.scaling
    per_worker = dict(scaling.resources_per_worker)
    if scaling.use_gpu:
        per_worker.setdefault("GPU", 1)
    need = {k: v * scaling.num_workers for k, v in per_worker.items() if v > 0}
    fits = min((math.floor(cluster.get(k, 0) / v + 1e-9) for k, v in need.items()), default=1)
    wanted = pipeline.tune.max_concurrent_trials
    return (min(wanted, fits) if wanted else fits), need


def run_sweep(config_path: str | Path, overrides: list[str] | tuple[str, ...] = (), address: str | None = None,
              name: str | None = None, started_at: float | None = None):
    """Run (or resume) the sweep; returns rayft.tune.results.SweepResults."""
    import ray

    from rayft.train.launch import ensure_ray
    from rayft.tune.results import collect, report

    started_at = started_at or time.time()
    loaded, spec = load_sweep(config_path, overrides, name)
    pipeline, tune = loaded.pipeline, loaded.pipeline.tune
    check_sweep_data(spec)
    ensure_ray(address, pipeline.scaling)  # starts a local Ray; fails fast if one trial cannot fit
    concurrency, need = plan_concurrency(pipeline, ray.cluster_resources())
    wanted = tune.max_concurrent_trials
    note = f" (max_concurrent_trials {wanted} lowered to what fits)" if wanted and wanted > concurrency else ""
    print(f"rayft: sweep '{spec.sweep_dir.name}' in {spec.sweep_dir}: {tune.resolved_num_samples()} "
          f"sample(s), {tune.search_alg} search, {tune.scheduler} scheduler, up to {concurrency} trial(s) at once "
          f"(each {', '.join(f'{k} {v:g}' for k, v in need.items())}){note}", flush=True)
    tuner = _tuner(loaded, spec, concurrency)
    grid = tuner.fit()
    results = collect(grid, loaded, spec)
    report(results, started_at)
    if results.best is None and grid.num_errors:
        raise SweepFailed(f"every trial failed; the first error: {next(r.error for r in results.trials if r.error)} "
                          f"(details in {spec.sweep_dir}/trial_*/error.txt)")
    # Tune creates trials lazily (a grid at 1 trial at a time), so a Ctrl-C can leave trials that
    # were never created: compare with the number the sweep should have, not with len(grid).
    expected = max(len(grid), expected_trials(spec, tune))
    if grid.num_terminated + grid.num_errors < expected:
        raise SweepInterrupted(f"sweep interrupted with {expected - grid.num_terminated - grid.num_errors} "
                               "trial(s) unfinished; run the same command again to resume it")
    return results


def _tuner(loaded: LoadedConfig, spec: SweepSpec, concurrency: int):
    from ray import tune as rt

    pipeline, tune = loaded.pipeline, loaded.pipeline.tune
    trainable = rt.with_resources(rt.with_parameters(run_trial, spec=spec),
                                  rt.PlacementGroupFactory([{"CPU": 0, "memory": TRIAL_MEMORY}]))
    space = param_space(spec, tune.search_alg)
    state_file = spec.sweep_dir / STATE_CONFIG
    fingerprint = _fingerprint(loaded)
    if rt.Tuner.can_restore(str(spec.sweep_dir)):
        if state_file.is_file() and state_file.read_text() != fingerprint:
            raise ConfigError(f"tune.name: the sweep '{spec.sweep_dir.name}' in {spec.sweep_dir} was started with a "
                              f"different config ({state_file}); give this sweep another name (--name or "
                              "tune.name) or remove that folder")
        print(f"rayft: resuming sweep '{spec.sweep_dir.name}': finished trials are kept", flush=True)
        return rt.Tuner.restore(str(spec.sweep_dir), trainable, resume_unfinished=True, restart_errored=True,
                                param_space=space)
    spec.sweep_dir.mkdir(parents=True, exist_ok=True)
    state_file.write_text(fingerprint)
    return rt.Tuner(
        trainable,
        param_space=space,
        tune_config=rt.TuneConfig(
            metric=tune.metric, mode=tune.mode, num_samples=tune.resolved_num_samples(),
            # BasicVariantGenerator (random, grid) takes the limit itself; Tune ignores this one for it.
            max_concurrent_trials=concurrency if tune.search_alg == "optuna" else None,
            search_alg=_search_alg(tune, concurrency),
            scheduler=make_scheduler(pipeline, space), reuse_actors=False,
            trial_dirname_creator=lambda trial: trial_dir_name(trial.trial_id),
        ),
        run_config=rt.RunConfig(
            name=spec.sweep_dir.name, storage_path=str(spec.sweep_dir.parent),
            failure_config=rt.FailureConfig(max_failures=tune.max_failures), verbose=1,
        ),
    )


def _fingerprint(loaded: LoadedConfig) -> str:
    """The resolved config minus the sweep's name: what a resumed sweep must share."""
    pipeline = loaded.pipeline.model_copy(deep=True)
    pipeline.tune = pipeline.tune.model_copy(update={"name": None})
    return dump_yaml(pipeline)


def _search_alg(tune, concurrency: int):
    if tune.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=tune.seed)  # Tune limits a Searcher's concurrency itself
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=concurrency, random_state=tune.seed)


def make_scheduler(pipeline, space: dict[str, Any]):
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    tune, training = pipeline.tune, pipeline.stages[0].training
    if tune.scheduler == "none":
        return FIFOScheduler()
    if tune.scheduler == "pbt":
        from rayft.tune.pbt import pbt_scheduler

        return pbt_scheduler(pipeline, space)
    return AsyncHyperBandScheduler(
        time_attr="global_step", max_t=training.max_steps,
        grace_period=min(tune.grace_period or training.eval_steps, training.max_steps),
        reduction_factor=tune.reduction_factor,
        brackets=tune.brackets or (3 if tune.scheduler == "hyperband" else 1),
        stop_last_trials=False,  # a trial that reaches max_steps finishes (and saves its adapter)
    )


def expected_trials(spec: SweepSpec, tune: Any) -> int:
    """Trials a finished sweep has: Tune's variant generator (grid, random) runs num_samples of every
    grid combination; a searcher (optuna) runs num_samples in all."""
    total = tune.resolved_num_samples()
    if tune.search_alg in ("grid", "random"):
        for domain in domains(spec).values():
            if domain.kind == "grid" or (tune.search_alg == "grid" and domain.kind == "choice"):
                total *= len(domain.args)
    return total


def domains(spec: SweepSpec) -> dict[str, Domain]:
    return {p: parse_domain(s) for p, s in spec.space.items()}
