"""ASHA vs running every configuration to the end, on one search space.

The same grid of configurations (same order, same seeds, same data) is swept twice with
`rayft.tune.sweep.run_sweep` on one local Ray: once with `scheduler: asha`, once with
`scheduler: none`. Reported: the best final eval loss each found, and the training steps each
spent (sum of the optimizer steps every trial ran). Target: ASHA within 2% of the full-run best
at <= 50% of the steps. Writes bench/results/tune_efficiency.json and the `tune_efficiency`
section of docs/benchmarks.md.

    RAYFT_HOME=... .venv/bin/python bench/tune_efficiency.py [--model builtin:tiny-random] [--steps 24]
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

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from docs_section import write_section  # noqa: E402

# Learning rates written in no particular order of quality, so ASHA does not get the good ones first;
# --trials N takes the first N.
LR_ORDER = (1e-4, 3e-3, 1e-5, 1e-3, 3e-6, 3e-4, 3e-5, 1e-6, 1e-2, 3e-7, 3e-2, 1e-7)


def lr_grid(trials: int) -> str:
    return "grid[" + ", ".join(f"{lr:g}" for lr in LR_ORDER[:trials]) + "]"


def rungs(grace: int, factor: int, max_t: int) -> list[int]:
    """The milestones at which ASHA compares trials (Ray's AsyncHyperBand with one bracket)."""
    out, t = [], grace
    while t < max_t:
        out.append(t)
        t *= factor
    return out


def config(model: str, steps: int, scheduler: str, storage: Path, concurrent: int, lrs: str) -> dict:
    return {
        "model": {"name": model},
        "adapter": {"r": 8, "alpha": 16},
        "data": {"path": str(REPO / "rayft" / "demo" / "extract_orders.jsonl"), "template": "alpaca",
                 "max_length": 128, "eval_split": 16, "max_rows": 128},
        "training": {"max_steps": steps, "batch_size": 4, "eval_steps": 4, "logging_steps": 4,
                     "lr_scheduler": "constant"},
        "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
        "storage": {"path": str(storage)},
        "eval": {"enabled": False},
        "tune": {"search_space": {"training.lr": lrs}, "search_alg": "grid", "scheduler": scheduler,
                 "grace_period": 4, "reduction_factor": 3, "max_concurrent_trials": concurrent,
                 "max_failures": 2},  # a trial killed by Ray's memory monitor runs again (from scratch),
    }


def sweep(model: str, steps: int, scheduler: str, root: Path, concurrent: int, lrs: str) -> dict:
    from rayft.tune.sweep import run_sweep

    path = root / f"{scheduler}.yaml"
    path.write_text(yaml.safe_dump(config(model, steps, scheduler, root / "runs", concurrent, lrs)))
    t0 = time.time()
    results = run_sweep(path, name=f"bench-{scheduler}")
    return {"scheduler": scheduler, "wall_s": time.time() - t0, "best_eval_loss": results.best.final_metric,
            "best_lr": results.best.params["training.lr"], "total_steps": sum(r.steps or 0 for r in results.trials),
            "stopped_early": sum(r.stopped_early for r in results.trials),
            "trials": [{"lr": r.params["training.lr"], "status": r.status, "steps": r.steps,
                        "final_eval_loss": r.final_metric} for r in results.trials]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="builtin:tiny-random")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--trials", type=int, default=6, choices=range(2, len(LR_ORDER) + 1), metavar="N",
                        help=f"learning rates in the grid (2..{len(LR_ORDER)})")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once (1 on a machine short of memory)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rayft-tune-bench-"))
    lrs = lr_grid(args.trials)
    asha = sweep(args.model, args.steps, "asha", root, args.concurrent, lrs)
    full = sweep(args.model, args.steps, "none", root, args.concurrent, lrs)
    gap = (asha["best_eval_loss"] - full["best_eval_loss"]) / full["best_eval_loss"]
    share = asha["total_steps"] / full["total_steps"]
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "command": f"python bench/tune_efficiency.py --model {args.model} --trials {args.trials} --steps {args.steps} "
                         f"--concurrent {args.concurrent}",
              "search_space": {"training.lr": lrs}, "asha": asha, "full": full,
              "best_gap": gap, "steps_share": share, "target_met": gap <= 0.02 and share <= 0.5}
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "tune_efficiency.json").write_text(json.dumps(result, indent=2) + "\n")
    n = len(full["trials"])
    body = [
        "### Sweeps: ASHA vs every configuration to the end", "",
        "| scheduler | best final eval loss | best lr | training steps | trials stopped early | wall s |",
        "|---|---|---|---|---|---|",
        *(f"| {r['scheduler'] if r is asha else 'none (full runs)'} | {r['best_eval_loss']:.4f} | {r['best_lr']:g} | "
          f"{r['total_steps']} | {r['stopped_early']} of {n} | {r['wall_s']:.0f} |" for r in (asha, full)), "",
        f"ASHA found a best eval loss {100 * gap:+.2f}% from the full runs' best, spending {100 * share:.0f}% of their "
        f"training steps (target: within 2% at <= 50%: {'met' if result['target_met'] else 'NOT met'}). "
        f"{n} learning rates ({lrs}) on the {args.model} model, {args.steps} steps each, eval every 4 steps, "
        f"ASHA grace period 4 and reduction factor 3 (rungs at steps {', '.join(map(str, rungs(4, 3, args.steps)))}), "
        "1 worker per trial, "
        f"{args.concurrent} trial(s) at once; "
        "both sweeps enumerate the same grid in the same order with the same seeds. "
        f"{result['machine']}, {result['date']}. Steps, not seconds, are the measure: every trial also pays a fixed "
        "start-up (Tune trial, Train controller and worker, model load), which on a loaded 2-core machine is most "
        "of its wall time.", "",
        f"Command: `RAYFT_HOME=... .venv/bin/{result['command']}`",
    ]
    write_section(REPO / "docs" / "benchmarks.md", "tune_efficiency", "\n".join(body))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
