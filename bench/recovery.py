"""Steps redone after a worker is killed, against the checkpoint interval (training.save_steps).

For each interval S a 2-worker tiny-model SFT (Ray Train, CPU, scaling.max_failures 1) is run and
one worker process is SIGKILLed as soon as rank 0 has finished step 2*S - 1, the worst moment: one
step before the second checkpoint. The run restarts, resumes from the last registered checkpoint
and finishes at max_steps; summary.json says from which step and how many steps were redone. With
--baseline the same config also runs without a kill, the baseline of a wall-time ratio. Writes bench/results/recovery.json
and the `recovery` section of docs/benchmarks.md.

    RAYFT_HOME=/tmp/rh .venv/bin/python bench/recovery.py [--intervals 2 5] [--max-steps 12] [--baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from docs_section import write_section  # noqa: E402

SETS = ["model.name=builtin:tiny-random", f"data.path={REPO / 'rayft/demo/extract_orders.jsonl'}",
        "data.template=alpaca", "data.max_length=160", "data.eval_split=0", "training.batch_size=4",
        "training.lr=3e-3", "training.logging_steps=1", "training.save_total_limit=2", "scaling.num_workers=2",
        "scaling.max_failures=1", "eval.enabled=false"]


def _registered(stage: Path) -> list[int]:
    try:
        snapshot = json.loads((stage / "ray" / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [int(r["metrics"]["step"]) for r in snapshot["checkpoint_results"]]


def run_once(storage: Path, name: str, save_steps: int, max_steps: int, kill_at: int | None) -> dict:
    from rayft.config.load import load_pipeline
    from rayft.records.attempts import read_attempts, read_progress
    from rayft.train.launch import run_pipeline

    loaded = load_pipeline(None, [*SETS, f"storage.path={storage}", f"run_name={name}",
                                f"training.save_steps={save_steps}", f"training.max_steps={max_steps}"])
    stage = storage / name / "sft"
    t0 = time.time()
    thread = threading.Thread(target=run_pipeline, args=(loaded,), daemon=True)
    thread.start()
    killed_at_step = None
    while kill_at is not None and thread.is_alive():
        step = (read_progress(stage) or {}).get("global_step", 0)
        if step >= kill_at and max(_registered(stage), default=0) >= save_steps:
            victim = next(w for w in read_attempts(stage)[-1]["workers"] if w["rank"] == 1)
            os.kill(victim["pid"], signal.SIGKILL)
            killed_at_step = step
            break
        time.sleep(0.02)
    thread.join()
    summary = json.loads((stage / "summary.json").read_text())
    return {"save_steps": save_steps, "max_steps": max_steps, "killed_after_step": killed_at_step,
            "resumed_from_step": summary.get("resumed_from_step"), "steps_redone": summary.get("steps_redone"),
            "final_step": summary.get("global_step"), "status": summary.get("status"),
            "restarts": summary.get("restarts"), "wall_s": time.time() - t0}


def _ratio(row: dict) -> str:
    return f"{row['wall_ratio_vs_no_kill']:.2f}" if "wall_ratio_vs_no_kill" in row else "not run"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--intervals", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--baseline", action="store_true", help="also run each config without a kill (wall ratio)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ["RAY_ADDRESS"] = "local"  # a Ray of its own, never another cluster on this machine
    import ray

    ray.init(num_cpus=2, logging_level="ERROR")
    storage = Path(tempfile.mkdtemp(prefix="rayft-bench-recovery-"))
    rows = []
    for s in args.intervals:
        assert 2 * s < args.max_steps, "the kill must come before the end"
        killed = run_once(storage, f"kill-s{s}", s, args.max_steps, 2 * s - 1)
        if args.baseline:
            baseline = run_once(storage, f"base-s{s}", s, args.max_steps, None)
            killed["baseline_wall_s"] = baseline["wall_s"]
            killed["wall_ratio_vs_no_kill"] = killed["wall_s"] / baseline["wall_s"]
        rows.append(killed)
        print(json.dumps(killed), flush=True)
    ray.shutdown()
    result = {"rows": rows, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
              "command": "RAYFT_HOME=/tmp/rh .venv/bin/python bench/recovery.py --intervals "
                         + " ".join(map(str, args.intervals)) + f" --max-steps {args.max_steps}"
                         + (" --baseline" if args.baseline else "")}
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "recovery.json").write_text(json.dumps(result, indent=2) + "\n")
    table = "\n".join(f"| {r['save_steps']} | {r['killed_after_step']} | {r['resumed_from_step']} | "
                      f"{r['steps_redone']} | {r['final_step']} / {r['max_steps']} | {_ratio(r)} |"
                      for r in rows)
    body = f"""## Recovery: steps redone after a worker kill vs the checkpoint interval

A 2-worker tiny-model SFT (Ray Train, CPU, `scaling.max_failures: 1`); one worker process is
SIGKILLed right after step 2*S-1, one step before the second checkpoint (the worst case for an
interval S). The worker group restarts and resumes from the newest intact checkpoint (step S);
the steps between it and the kill are done again. Wall ratio: the killed run against the same
config without a kill, in the same process (`--baseline`; it includes the restart: new worker
processes, model load, checkpoint restore).

| save_steps S | killed after step | resumed from step | steps redone | final step | wall vs no kill |
|---|---|---|---|---|---|
{table}

At most S-1 steps are redone (plus the step in flight at the kill): the checkpoint interval is
the work a failure can cost. Measured on {result['machine']}, {result['date']}, with the command:

    {result['command']}
"""
    write_section(REPO / "docs" / "benchmarks.md", "recovery", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
