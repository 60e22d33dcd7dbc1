"""`eval.benchmarks`: the base model and every tuned model on lm-evaluation-harness tasks, one Ray
task per model (spread over the cluster's CPUs or GPUs), compared against the base with a
forgetting flag. Per-question scores go to benchmarks/<model>.json; eval.json gets the figures."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rayft.core.paths import file_safe
from rayft.metrics.benchmarks import ModelSpec, TaskPlan, evaluate_model, plan_tasks

BASE = "base"


def plan(bench: Any, out_dir: Path) -> TaskPlan:
    """Check the tasks (and write rayft's offline ones) before any model loads."""
    return plan_tasks(bench, out_dir / "benchmarks")


def run_benchmarks(bench: Any, task_plan: TaskPlan, model_path: str, outputs: dict[str, Path], include_base: bool,
                   model_cfg: Any, out_dir: Path) -> dict[str, Any]:
    """Every model on every planned task; {settings, models, rows, notes} for eval.json and the reports."""
    import logging

    import ray

    models = ([ModelSpec(BASE, model_path, None, model_cfg.trust_remote_code)] if include_base else [])
    for label, out in outputs.items():
        adapter = (out / "adapter_config.json").is_file()
        models.append(ModelSpec(label, model_path if adapter else str(out), str(out) if adapter else None,
                                model_cfg.trust_remote_code))
    if not ray.is_initialized():  # `rayft eval` alone; after `rayft train` the run's Ray is reused
        ray.init(logging_level=logging.WARNING)
    device = "cuda" if bench.num_gpus > 0 else "cpu"
    print(f"rayft: benchmarking {len(models)} model(s) on {', '.join(task_plan.tasks)} with lm-evaluation-harness"
          f" ({'limit ' + str(bench.limit) if bench.limit else 'every question'}), one Ray task per model ...",
          flush=True)
    task = ray.remote(num_cpus=bench.num_cpus, num_gpus=bench.num_gpus)(_evaluate_task)
    t0 = time.time()
    refs = {m.label: task.remote(m, task_plan, bench.model_dump(), device) for m in models}
    results: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    folder = out_dir / "benchmarks"
    for label, ref in refs.items():
        try:
            results[label] = ray.get(ref)
        except Exception as exc:  # one model's failure must not lose the others' figures
            notes.append(f"benchmarks: {label} could not be evaluated: {_last_line(exc)}")
            continue
        (folder / f"{file_safe(label)}.json").write_text(json.dumps(results[label], indent=1) + "\n")
        print(f"rayft: benchmarks of {label} done ({results[label]['seconds']:.0f} s)", flush=True)
    return {"settings": {"tasks": task_plan.tasks, "limit": bench.limit, "num_fewshot": bench.num_fewshot,
                         "batch_size": bench.batch_size, "device": device},
            "models": {label: {"command": r["command"], "seconds": round(r["seconds"], 1), "versions": r["versions"],
                               "file": str(folder / f"{file_safe(label)}.json")} for label, r in results.items()},
            "rows": compare_to_base(results, BASE if include_base else None), "notes": notes,
            "wall_s": round(time.time() - t0, 1)}


def _evaluate_task(model: ModelSpec, task_plan: TaskPlan, bench: dict[str, Any], device: str) -> dict[str, Any]:
    import torch

    from rayft.schema.benchmarks import BenchmarksConfig

    config = BenchmarksConfig.model_validate(bench)
    torch.set_num_threads(max(1, int(config.num_cpus)))
    t0 = time.time()
    result = evaluate_model(model, task_plan, config, device)
    result["seconds"] = time.time() - t0
    return result


def compare_to_base(results: dict[str, dict[str, Any]], base: str | None) -> list[dict[str, Any]]:
    """One row per task and metric: each model's value and stderr; for tuned models the change
    against base, its standard error (paired over the same questions where per-question scores
    exist) and `forgetting`: worse than base by more than that standard error."""
    rows = []
    order = list(results)
    keys: list[tuple[str, str]] = []
    for label in order:
        for task, found in results[label]["tasks"].items():
            keys += [(task, metric) for metric in found["metrics"] if (task, metric) not in keys]
    for task, metric in keys:
        row: dict[str, Any] = {"task": task, "metric": metric, "models": {}}
        reference = _figure(results.get(base, {}), task, metric) if base else None
        for label in order:
            found = _figure(results[label], task, metric)
            if found is None:
                continue
            row.setdefault("alias", results[label]["tasks"][task].get("alias", task))
            row.setdefault("n", found.get("n"))
            row.setdefault("higher_is_better", found["higher_is_better"])
            cell = {"value": found["value"], "stderr": found["stderr"]}
            if reference is not None and label != base:
                delta, se = _difference(found, reference)
                worse = -delta if found["higher_is_better"] else delta
                # strictly more than one standard error (a tolerance for float ties: one question in 40
                # below base is a change of exactly one paired stderr, not forgetting)
                cell.update(delta=delta, delta_stderr=se, forgetting=bool(worse > (se or 0.0) + 1e-9 and worse > 0))
            row["models"][label] = cell
        rows.append(row)
    return rows


def _figure(result: dict[str, Any], task: str, metric: str) -> dict[str, Any] | None:
    return ((result.get("tasks") or {}).get(task) or {}).get("metrics", {}).get(metric)


def _difference(tuned: dict[str, Any], base: dict[str, Any]) -> tuple[float, float | None]:
    delta = tuned["value"] - base["value"]
    a = dict(map(tuple, tuned.get("samples") or []))
    b = dict(map(tuple, base.get("samples") or []))
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        diffs = [a[k] - b[k] for k in shared]
        mean = sum(diffs) / len(diffs)
        var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
        return delta, math.sqrt(var / len(diffs))
    if tuned.get("stderr") is not None and base.get("stderr") is not None:
        return delta, math.sqrt(tuned["stderr"] ** 2 + base["stderr"] ** 2)
    return delta, None


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__



def benchmark_table(benchmarks: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The report's table: one row per task and metric, a column per model; tuned models show their
    change against base and FORGETTING where they fell below it by more than its standard error."""
    labels = list(benchmarks["models"])
    header = ["task", "metric", "n", *labels]
    rows = []
    for row in benchmarks["rows"]:
        cells = [row.get("alias") or row["task"], row["metric"], str(row.get("n") or "-")]
        for label in labels:
            cell = row["models"].get(label)
            if cell is None:
                cells.append("-")
                continue
            text = f"{100 * cell['value']:.1f}" + (f" ± {100 * cell['stderr']:.1f}" if cell["stderr"] is not None else "")
            if "delta" in cell:
                se = cell["delta_stderr"]
                text += f" ({100 * cell['delta']:+.1f}" + (f" ± {100 * se:.1f}" if se is not None else "") + ")"
                text += " FORGETTING" if cell["forgetting"] else ""
            cells.append(text)
        rows.append(cells)
    return header, rows


def benchmark_caption(benchmarks: dict[str, Any]) -> str:
    s = benchmarks["settings"]
    sample = f"the first {s['limit']} questions of each task (a sample)" if s["limit"] else "every question"
    shots = "each task's own few-shot setting" if s["num_fewshot"] is None else f"{s['num_fewshot']}-shot"
    return (f"lm-evaluation-harness on {sample}, {shots}; figures in %, ± standard error; in brackets the change "
            f"against base ± its standard error (paired over the same questions). FORGETTING: below base by "
            f"more than that standard error. Each model's `lm_eval` command line and per-question scores: "
            f"benchmarks/<model>.json.")
