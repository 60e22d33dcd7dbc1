"""Memory before and after: each stage's estimate (rayft.compute.plan) printed when it starts and
checked before any worker loads the model, `rayft plan CONFIG` for the whole run, and a plain
account of a worker that ran out of memory."""

from __future__ import annotations

import re
from typing import Any

from rayft.compute.plan import MemoryPlan, gib, longest_row, model_shape, plan_stage, worker_limit
from rayft.core.errors import UserError


class MemoryRefused(UserError):
    """A stage whose estimate is over what its workers can have (exit 2; --force runs it)."""


def check_stage_memory(pipeline: Any, index: int, model_path: str, data: Any, address: str | None,
                       force: bool) -> MemoryPlan:
    """Print the stage's estimate; refuse it, before the workers start, when it does not fit."""
    limit, source = worker_limit(pipeline.scaling, address)
    shape = model_shape(model_path, pipeline.model.trust_remote_code)
    plan = plan_stage(pipeline, index, shape, limit, source, longest=longest_row(data))
    print(f"rayft: memory: {plan.line()}", flush=True)
    if not plan.fits:
        if not force:
            raise MemoryRefused(plan.refusal())
        print(f"rayft: memory: --force: stage '{plan.stage}' runs although its estimate is over the limit", flush=True)
    return plan


def plan_summary(plan: MemoryPlan) -> dict[str, Any]:
    """The estimate as summary.json keeps it (GiB)."""
    return {"estimate_gib": round(plan.total / 2**30, 2), "limit_gib": None if plan.limit is None else
            round(plan.limit / 2**30, 2), "limit_source": plan.limit_source,
            "parts_gib": {name: round(size / 2**30, 3) for name, size in plan.parts.items()}}


def plan_run(loaded: Any, address: str | None = None) -> list[MemoryPlan]:
    """`rayft plan CONFIG`: each stage's estimate with its parts, on the data as prepared."""
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.stages import get_stage

    pipeline = loaded.pipeline
    model_path = resolve_model(pipeline.model.name, pipeline.model.revision)
    tokenizer = load_tokenizer(model_path, pipeline.model.trust_remote_code, pipeline.model)
    shape = model_shape(model_path, pipeline.model.trust_remote_code)
    limit, source = worker_limit(pipeline.scaling, address)
    plans = []
    for index, stage in enumerate(pipeline.stages):
        try:
            longest = longest_row(get_stage(stage.type).prepare_data(stage, tokenizer))
        except UserError:  # e.g. data an earlier stage writes: the worst case, data.max_length
            longest = None
        plan = plan_stage(pipeline, index, shape, limit, source, longest=longest)
        plans.append(plan)
        tokens = f"longest row {longest} tokens" if longest else f"rows up to data.max_length {stage.data.max_length}"
        print(f"stage '{stage.name}' ({stage.type}), {tokens}, batch {stage.training.batch_size}, gradient "
              f"checkpointing {'on' if stage.training.gradient_checkpointing else 'off'}:")
        for name, size in plan.parts.items():
            print(f"  {name:<12} {gib(size):>10}")
        verdict = "fits" if plan.fits else "DOES NOT FIT"
        print(f"  {'total':<12} {gib(plan.total):>10}  per {plan.device.upper()} worker; limit {gib(plan.limit)} "
              f"({source}): {verdict}")
        for settings, total in (plan.knobs if not plan.fits else []):
            print(f"    {settings}  -> about {gib(total)}")
    return plans


# Ray's memory monitor (OutOfMemoryError, "...running low on memory"), CUDA's allocator; a worker the
# kernel's OOM killer took is reported by Ray as an actor that died (not told apart from a kill -9).
def estimates_without_data(pipeline: Any, address: str | None = None) -> list[MemoryPlan] | None:
    """Each stage's estimate from the config alone (rows up to data.max_length), for the web UI's
    form; None while the model is not on this machine yet (nothing is built or downloaded here)."""
    from rayft.models.loader import local_model_path

    path = local_model_path(pipeline.model.name, pipeline.model.revision)
    if path is None:
        return None
    shape = model_shape(path, pipeline.model.trust_remote_code)
    limit, source = worker_limit(pipeline.scaling, address)
    return [plan_stage(pipeline, index, shape, limit, source) for index in range(len(pipeline.stages))]


OOM_MARKERS = ("OutOfMemoryError", "running low on memory", "ran out of memory", "out of memory",
               "Memory on the node")


def out_of_memory(error: BaseException) -> bool:
    """A worker killed by Ray's memory monitor or the kernel's OOM killer, or CUDA out of memory."""
    text = _error_text(error)
    return any(marker.lower() in text.lower() for marker in OOM_MARKERS)


def oom_message(error: BaseException, plan: MemoryPlan | None, retries: int) -> str:
    """One paragraph (the launcher puts the stage's name before it): what was killed and how much memory the node had then against its
    limit, the estimate, what to change; and that a retry with nothing changed meets the same end."""
    text = _error_text(error)
    lines = ["out of memory: " + (_monitor_kill(text, error) or (
        "CUDA ran out of memory on a worker's GPU" if "cuda out of memory" in text.lower() else
        "a worker was killed for lack of memory"))]
    if plan is not None:
        lines.append(f"The estimate for this stage was {gib(plan.total)} per worker against {gib(plan.limit)} "
                     f"({plan.limit_source}).")
        knobs = [f"{settings} (about {gib(total)})" for settings, total in plan.knobs] or _generic_knobs()
    else:
        knobs = _generic_knobs()
    lines.append("Settings that make it smaller: " + "; ".join(knobs) + ".")
    if retries:
        lines.append(f"It was tried {retries + 1} times (scaling.max_failures: {retries}) with the same settings, "
                     "so each retry met the same end: change one of the settings above before running it again.")
    return " ".join(lines)


def _monitor_kill(text: str, error: BaseException) -> str | None:
    """Ray's memory monitor's account (raylet, Ray 2.60), in a sentence: the node's memory against the
    kill threshold, what it killed, and the largest process at the time (usually a training worker)."""
    reason = re.search(r"Memory usage (\d+)B exceeded threshold of (\d+)B \(([\d.]+)% of (\d+)B limit\)", text)
    if reason is None:
        return None
    used, threshold, share, total = (float(g) for g in reason.groups())
    sentence = (f"the node's memory reached {used / 2**30:.1f} GiB, over Ray's kill threshold of "
                f"{threshold / 2**30:.1f} GiB ({share:g}% of {total / 2**30:.1f} GiB), so Ray's memory monitor killed ")
    killed = re.search(r"Selected to kill: \(Task: .*?task name=([^,]+),.*?pid=(\d+), actual memory used=([\d.]+)GB",
                       text, re.DOTALL)
    failures = getattr(error, "worker_failures", None) or {}
    rank = next((rank for rank, exc in failures.items() if out_of_memory(exc)), None)
    if killed:
        sentence += f"{killed.group(1)} (pid {killed.group(2)}, {killed.group(3)} GB)"
    else:
        sentence += f"worker {rank}" if rank is not None else "a process of the run"
    top = re.search(r"Top 10 memory users:[^\n]*\n(\d+)\s+([\d.]+)\s+(\S+)", text)
    if top:
        sentence += f"; the largest process then was {top.group(3)} (pid {top.group(1)}, {top.group(2)} GB)"
    return sentence + "."


def _generic_knobs() -> list[str]:
    return ["training.gradient_checkpointing: true", "a smaller training.batch_size with a larger "
            "training.grad_accum", "a smaller data.max_length", "fewer scaling.num_workers per node"]


def _error_text(error: BaseException) -> str:
    parts, seen = [], set()
    todo = [error, *(getattr(error, "worker_failures", None) or {}).values()]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        todo.extend([getattr(exc, "cause", None), exc.__cause__, exc.__context__])
    return "\n".join(parts)
