"""Where a short Ray Train stage spends its time: wall clock, time to the first optimizer step,
training runtime and the machine's busy CPU seconds (driver, raylet, Ray Train's controller
actors, the workers; run it on a quiet machine), for N SFT stages of the tiny random model on 2 workers (or
alternating worker counts, `--workers 1 2`) in one local Ray. The first stage pays Ray's own start-up; later ones show the per-stage cost.

It explains the test suite's time (docs/contributing.md): most Ray tests run a few steps of the tiny
model, so what they measure is this fixed cost, not training.

    RAYFT_HOME=... .venv/bin/python bench/ray_train_overhead.py [--runs 2] [--steps 4] [--workers 2]

Prints one JSON line per run, writes bench/results/ray_train_overhead.json and the
`ray_train_overhead` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "rayft" / "demo" / "extract_orders.jsonl"
sys.path.insert(0, str(ROOT / "bench"))

from docs_section import write_section  # noqa: E402


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (/proc/stat): counts every Ray process, also the
    ones that exit during the run (a per-process sum loses those). Run it on a quiet machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[2],
                        help="Ray Train workers per stage; several values alternate stage by stage")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    sys.path.insert(0, str(ROOT))
    import ray

    from rayft.config.load import load_pipeline
    from rayft.train.launch import run_pipeline

    storage = Path(tempfile.mkdtemp(prefix="rayft-overhead-"))
    ray.init(num_cpus=2, logging_level="WARNING")
    rows = []
    for i in range(args.runs):
        workers = args.workers[i % len(args.workers)]
        cpu0, wall0 = busy_cpu_seconds(), time.time()
        run_pipeline(load_pipeline(None, [
            "model.name=builtin:tiny-random", f"data.path={DEMO}", "data.template=alpaca", "data.max_length=160",
            "data.eval_split=8", f"training.max_steps={args.steps}", "training.batch_size=4",
            "training.logging_steps=2", f"scaling.num_workers={workers}", f"run_name=r{i}", f"storage.path={storage}",
            "eval.enabled=false"]))
        wall, cpu = time.time() - wall0, busy_cpu_seconds() - cpu0
        summary = json.loads((storage / f"r{i}" / "sft" / "summary.json").read_text())
        rows.append({"run": i, "workers": workers, "wall_s": round(wall, 1), "time_to_first_step_s": round(summary["time_to_first_step_s"], 1),
                     "train_runtime_s": round(summary["train_runtime_s"], 1), "busy_cpu_s": round(cpu, 1),
                     "cpu_share_of_all_cores": round(cpu / wall / os.cpu_count(), 2)})
        print(json.dumps(rows[-1]), flush=True)
    ray.shutdown()
    write_results(rows, args)


def write_results(rows: list[dict], args: argparse.Namespace) -> None:
    command = (f"RAYFT_HOME=... .venv/bin/python bench/ray_train_overhead.py --runs {args.runs} --steps {args.steps} "
               f"--workers {' '.join(map(str, args.workers))}")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "ray_train_overhead.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = [f"| {r['run']} | {r['workers']} | {r['wall_s']} | {r['time_to_first_step_s']} | {r['train_runtime_s']} | {r['busy_cpu_s']} "
             f"| {r['cpu_share_of_all_cores']:.0%} |" for r in rows]
    write_section(ROOT / "docs" / "benchmarks.md", "ray_train_overhead", "\n".join([
        "## Fixed cost of a short Ray Train stage",
        "",
        f"Command: `{command}`, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPU cores, "
        f"{platform.platform()}. {args.steps} SFT steps of the tiny random model, each stage in the "
        "same local Ray (run 0 pays Ray's start-up). CPU is the machine's busy time from /proc/stat (everything Ray "
        "ran, on an otherwise quiet machine).",
        "",
        "| run | workers | wall s | first step at s | train runtime s | CPU s | CPU share of all cores |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
        "Most of a short stage is fixed cost (actor start-up, imports of torch / transformers / TRL in every "
        "worker, process-group set-up, teardown), and it is CPU work: both cores stay about 80% busy. It is "
        "why the Ray tests cost what they cost (docs/contributing.md).",
    ]))


if __name__ == "__main__":
    main()
