"""A preference stage's `pairs:` (rayft.schema.pairs): build its on-policy pairs from the policy it
starts from, before it trains, then train on them.

The pairs are built by the same builder as `rayft data preference`, in one Ray task (the driver's
node, a cluster's head, may have no GPU): with one training worker's resources when the workers
have GPUs, else with the CPUs of all the stage's workers (idle until the pairs exist) as far as
one node has them. They go to `<stage>/pairs/pairs.jsonl`, with the counts and the settings that
made them in `pairs.stats.json`; the stage then reads that file as its preference data (its
held-out pairs split off as usual). A re-run of a stage that failed after its pairs were built
reuses them when they came from the same starting adapter and settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rayft.core.errors import UserError


def with_onpolicy_pairs(pipeline: Any, index: int, stage_dir: Path, start: Path | None) -> tuple[Any, dict[str, Any]]:
    """The stage with its `data` replaced by the pairs built from the `start` adapter (None: the base),
    and the builder's counts. Ray is connected already (the caller's `ensure_ray`)."""
    stage = pipeline.stages[index]
    spec = stage.pairs
    out = stage_dir / "pairs" / "pairs.jsonl"
    stats_file = out.with_suffix(".stats.json")
    adapter = str(start) if start else None
    made_by = {"adapter": adapter, "settings": spec.model_dump()}
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() and out.is_file() else None
    if stats and {k: stats.get(k) for k in made_by} == made_by:
        print(f"rayft: stage '{stage.name}' reuses its on-policy pairs ({stats['pairs']} pairs, {out})", flush=True)
    else:
        print(f"rayft: stage '{stage.name}': building on-policy pairs from {adapter or 'the base model'} "
              f"({spec.samples} samples{' + the greedy answer' if spec.greedy else ''} per prompt, "
              f"score {spec.score})", flush=True)
        stats = {**_build_remote(pipeline, index, out, adapter), **made_by}
        stats_file.write_text(json.dumps(stats, indent=2) + "\n")
    data = stage.data.model_copy(update={"path": str(out), "sources": [], "dataset": None, "format": "preference",
                                         "columns": {}, "eval_path": None, "max_rows": None})
    return stage.model_copy(update={"data": data, "pairs": None}), stats  # now a stage on a pairs file


def _build_remote(pipeline: Any, index: int, out: Path, adapter: str | None) -> dict[str, Any]:
    import ray

    stage = pipeline.stages[index]
    scaling, spec = pipeline.scaling, stage.pairs
    resources = dict(scaling.resources_per_worker)
    cpus = resources.pop("CPU", 1)
    if not scaling.use_gpu:  # CPU workers: the stage's idle CPU share, as far as one node has it
        largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=cpus)
        cpus = max(cpus, min(cpus * scaling.num_workers, largest))
    options = {"num_cpus": cpus, "num_gpus": resources.pop("GPU", 1 if scaling.use_gpu else 0),
               "resources": resources or None}
    threads = (scaling.threads_per_worker if scaling.use_gpu else None) or max(1, int(cpus))
    score = spec.score
    if score.startswith("stage:"):  # an earlier reward stage of this run (checked when the config loaded)
        score = str(out.parents[2] / score[len("stage:"):])
    from rayft.generation.vllm_pool import chosen_engine

    if chosen_engine(pipeline.generation) == "vllm":  # the engines are Ray actors: drive them from here
        try:
            return _build(pipeline, stage.data, out, adapter, score, spec, None)
        except UserError as exc:
            raise UserError(f"stages.{index}.pairs: {exc}") from None
    task = ray.remote(_build).options(**options)
    try:
        return ray.get(task.remote(pipeline, stage.data, out, adapter, score, spec, threads))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, UserError):  # e.g. no pairs: the message says why and what to change
            raise UserError(f"stages.{index}.pairs: {cause}") from None
        raise


def _build(pipeline: Any, data: Any, out: Path, adapter: str | None, score: str, spec: Any, threads: int | None
           ) -> dict[str, Any]:
    """The Ray task (or, on vLLM, the driver): `spec` (the stage's `pairs:`) as the builder's
    arguments, on the training split."""
    import torch

    from rayft.datatools.pair_builder import build_pairs

    if threads:
        torch.set_num_threads(threads)
    return build_pairs(pipeline, data, out, adapter, limit=spec.limit, split="train", samples=spec.samples,
                       score=score, temperature=spec.temperature, min_gap=spec.min_gap, greedy=spec.greedy,
                       seed=spec.seed, max_new_tokens=spec.max_new_tokens)
