"""Standard benchmarks through lm-evaluation-harness: which tasks a config names (checked before any
model loads), one model's evaluation (lm-eval's `HFLM` + `simple_evaluate`), the equivalent
`lm_eval` command line, and the figures read back from lm-eval's results."""

from __future__ import annotations

import difflib
import functools
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayft.core.errors import UserError
from rayft.metrics.benchmark_tasks import BENCHMARKS, MMLU_GROUP, LocalTasks, is_shipped, write_local_tasks

LOCAL_FORMATS = {"json", "csv", "parquet", "text", "arrow"}  # datasets' builders for local files
HUB = ("huggingface.co", 443)


@dataclass
class TaskPlan:
    """What lm-eval will run: task names, the folders it must index, and the hub's part."""

    tasks: list[str]
    include: list[str]  # folders (and the written rayft_* folder) for TaskManager(include_path=...)
    include_defaults: bool  # whether lm-eval's own task registry is needed (slow to index)
    offline_cached: list[str] = field(default_factory=list)  # hub datasets read from the local cache


@dataclass
class ModelSpec:
    """One model to benchmark: `pretrained` (a model folder) and optionally a PEFT adapter folder."""

    label: str
    pretrained: str
    adapter: str | None = None
    trust_remote_code: bool = False


def plan_tasks(bench: Any, work_dir: Path) -> TaskPlan:
    """Check every name in `eval.benchmarks.tasks` (a task, group or tag of lm-eval, a shipped
    rayft_* task, or a task YAML file / folder) and write the rayft_* tasks; a user error names the
    task and what to do, before any model loads."""
    names, include = [], []
    for item in bench.tasks:
        path = Path(item).expanduser()
        if item.endswith((".yaml", ".yml")) or path.is_dir():
            if not path.exists():
                raise UserError(f"eval.benchmarks.tasks: {item}: no such task file or folder")
            include.append(str(path.resolve().parent if path.is_file() else path.resolve()))
            names.extend(_names_in(path))
        else:
            names.append(item)
    local = write_local_tasks(Path(bench.data_dir).expanduser() if bench.data_dir else None, work_dir / "rayft_tasks")
    include.insert(0, str(local.folder))
    for name in names:
        if is_shipped(name) and name not in local.names:
            _refuse_missing_shipped(name, local, bench.data_dir)
    manager = _manager(include, False)  # rayft's and the user's folders only: fast to index
    defaults = any(n not in set(manager.all_tasks) for n in names)
    if defaults:  # lm-eval's own registry (several seconds to index)
        manager = _manager(include, True)
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known | set(BENCHMARKS)), n=3, cutoff=0.6)
            raise UserError(f"eval.benchmarks.tasks: {name!r} is not an lm-evaluation-harness task, group or tag"
                            + (f" (did you mean {', '.join(close)}?)" if close else "")
                            + "; `lm_eval ls tasks` lists them, rayft_* names are rayft's offline copies "
                              "(docs/evaluation.md)")
    cached = _check_hub(manager, names)
    return TaskPlan(names, include, defaults, cached)


def _names_in(path: Path) -> list[str]:
    """The task names a task YAML file holds, or a folder's: its groups, else its tasks."""
    import yaml

    groups, tasks = [], []
    for f in [path] if path.is_file() else sorted(path.rglob("*.yaml")):
        try:
            spec = yaml.load(f.read_text(), Loader=_tagged_loader()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"eval.benchmarks.tasks: {f}: not a readable task YAML ({exc})") from None
        name = (spec.get("group") or spec.get("task")) if isinstance(spec, dict) else None
        if isinstance(name, str):
            (groups if "group" in spec else tasks).append(name)
    found = groups + tasks if path.is_file() else groups or tasks
    if not found:
        raise UserError(f"eval.benchmarks.tasks: {path}: names no task (a task YAML has `task: <name>`)")
    return found


@functools.cache
def _tagged_loader():
    """A SafeLoader that reads lm-eval's `!function module.name` tags as text."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return Loader


def _refuse_missing_shipped(name: str, local: LocalTasks, data_dir: str | None) -> None:
    base = next((b for b in BENCHMARKS if name == b or name.startswith(b + "_")), None)
    if base is None:
        raise UserError(f"eval.benchmarks.tasks: {name!r} is not one of rayft's offline tasks "
                        f"({', '.join(BENCHMARKS)}; MMLU subjects as rayft_mmlu_<subject>)")
    needed = BENCHMARKS[base].files[0]
    if base == MMLU_GROUP and name != base:
        needed = needed.replace("<subject>", name.removeprefix(base + "_"))
    if data_dir is None:
        raise UserError(f"eval.benchmarks.data_dir: {name} reads local data; set data_dir to the folder that "
                        f"holds {needed} (from {BENCHMARKS[base].source}; docs/evaluation.md)")
    subjects = [n.removeprefix(MMLU_GROUP + "_") for n in local.names if n.startswith(MMLU_GROUP + "_")]
    close = difflib.get_close_matches(name.removeprefix(MMLU_GROUP + "_"), subjects, n=3, cutoff=0.6)
    raise UserError(f"eval.benchmarks.tasks: {name}: {Path(data_dir) / needed} does not exist"
                    + (f" (subjects there include {', '.join(close)})" if close else "")
                    + f"; get it from {BENCHMARKS[base].source} (layout in docs/evaluation.md)")


_MANAGERS: dict[tuple[tuple[str, ...], bool], Any] = {}


def _manager(include: list[str], defaults: bool):
    key = (tuple(include), defaults)
    if key not in _MANAGERS:
        from lm_eval.tasks import TaskManager

        _MANAGERS[key] = TaskManager(include_path=list(include), include_defaults=defaults)
    return _MANAGERS[key]


def _check_hub(manager: Any, names: list[str]) -> list[str]:
    """Hub datasets the tasks read: fine when the hub answers or the dataset is in the local cache
    (then read offline); otherwise a user error naming the task."""
    needs: dict[str, str] = {}
    for name in names:
        for task, cfg in _leaf_configs(manager, name):
            path = str(cfg.get("dataset_path") or "")
            if path and path not in LOCAL_FORMATS and not Path(path).expanduser().exists():
                needs.setdefault(path, task)
    if not needs or _hub_reachable():
        return []
    cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "datasets").expanduser()
    missing = {p: t for p, t in needs.items() if not list(cache.glob(p.replace("/", "___") + "*"))}
    if missing:
        path, task = next(iter(missing.items()))
        raise UserError(f"eval.benchmarks.tasks: {task} reads the hub dataset {path}, and the hub "
                        f"({HUB[0]}) cannot be reached from here nor is the dataset in {cache}. Use rayft's "
                        f"offline copy where one exists ({', '.join(BENCHMARKS)}; eval.benchmarks.data_dir), "
                        f"a task YAML over local files, or fetch the dataset into the cache where the hub is reachable")
    return sorted(needs)


def _leaf_configs(manager: Any, name: str, seen: set[str] | None = None) -> list[tuple[str, dict]]:
    seen = seen if seen is not None else set()
    if name in seen:
        return []
    seen.add(name)
    entry = manager.task_index.get(name)
    if entry is None:
        return []
    cfg = entry.cfg or {}
    subtasks = cfg.get("task") if isinstance(cfg.get("task"), list) else None
    if subtasks is None and entry.kind.name == "TAG":
        subtasks = [n for n, e in manager.task_index.items() if name in (e.tags or set())]
    if subtasks is None:
        return [(name, cfg)]
    found = []
    for sub in subtasks:
        found.extend(_leaf_configs(manager, sub if isinstance(sub, str) else str(sub.get("task")), seen))
    return found


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection(HUB, timeout=timeout):
            return True
    except OSError:
        return False


def model_args(model: ModelSpec, batch_size: int) -> dict[str, Any]:
    args: dict[str, Any] = {"pretrained": model.pretrained, "batch_size": batch_size}
    if model.adapter:
        args["peft"] = model.adapter
    if model.trust_remote_code:
        args["trust_remote_code"] = True
    return args


def command_line(model: ModelSpec, plan: TaskPlan, bench: Any, device: str) -> str:
    """The `lm_eval` command line that gives the same figures (documented; tested equal)."""
    args = model_args(model, bench.batch_size)
    batch = args.pop("batch_size")
    parts = ["lm_eval", "--model", "hf", "--model_args", ",".join(f"{k}={v}" for k, v in args.items()),
             "--device", device, "--batch_size", str(batch), "--tasks", ",".join(plan.tasks),
             "--include_path", ",".join(plan.include)]
    if bench.limit is not None:
        parts += ["--limit", str(bench.limit)]
    if bench.num_fewshot is not None:
        parts += ["--num_fewshot", str(bench.num_fewshot)]
    return " ".join(parts)


def evaluate_model(model: ModelSpec, plan: TaskPlan, bench: Any, device: str = "cpu") -> dict[str, Any]:
    """One model on every planned task: {task: {metric: {value, stderr, n, higher_is_better}}} plus the
    per-question scores (for paired comparisons) and the command line."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    if plan.offline_cached:
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    lm = HFLM(device=device, **model_args(model, bench.batch_size))
    raw = lm_eval.simple_evaluate(model=lm, tasks=list(plan.tasks), num_fewshot=bench.num_fewshot,
                                  limit=bench.limit, task_manager=_manager(plan.include, plan.include_defaults),
                                  log_samples=True, bootstrap_iters=bench.bootstrap_iters)
    if raw is None:  # lm-eval returns None on non-zero ranks only
        raise RuntimeError("lm-eval returned no results")
    return {"tasks": read_results(raw), "command": command_line(model, plan, bench, device),
            "versions": {"lm_eval": _version()}}


def read_results(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """lm-eval's results as {task: {"metric[,filter]": {value, stderr, higher_is_better, n, samples}}};
    groups carry their aggregate (no samples)."""
    higher = raw.get("higher_is_better") or {}
    counts = raw.get("n-samples") or {}
    out: dict[str, dict[str, Any]] = {}
    sections = {**(raw.get("groups") or {}), **(raw.get("results") or {})}
    for task, figures in sections.items():
        metrics: dict[str, Any] = {}
        for key, value in figures.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            label = metric if filt == "none" else f"{metric},{filt}"
            stderr = figures.get(f"{metric}_stderr,{filt}")
            samples = _samples(raw, task, metric, filt)
            metrics[label] = {"value": float(value),
                              "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                              "higher_is_better": bool((higher.get(task) or {}).get(metric, True)),
                              "n": (counts.get(task) or {}).get("effective") or (len(samples) if samples else None),
                              "samples": samples}
        if metrics:
            out[task] = {"alias": figures.get("alias", task), "metrics": metrics}
    return out


def _samples(raw: dict[str, Any], task: str, metric: str, filt: str) -> list[list] | None:
    rows = (raw.get("samples") or {}).get(task)
    if not rows:
        return None
    found = [[row.get("doc_id"), float(row[metric])] for row in rows
             if row.get("filter", "none") == filt and isinstance(row.get(metric), (int, float, bool))]
    return sorted(found) or None


def _version() -> str:
    from importlib import metadata

    return metadata.version("lm_eval")
