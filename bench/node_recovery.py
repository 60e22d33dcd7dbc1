"""Steps redone and wall time lost when a node goes, on a real local multi-node Ray cluster (the
tests' tests/local_cluster.py: `ray start` head + two 1-CPU worker nodes on 127.0.0.1), in one run:

- preemption notice: a 1-worker tiny-model SFT whose node is drained (`ray drain-node --reason
  DRAIN_NODE_REASON_PREEMPTION`, 12 s deadline) after step 15, with `scaling.checkpoint_on_preemption`
  on (rayft's default) and off (what happened before: back to the last periodic checkpoint);
- node killed: a 2-worker elastic (1-2) SFT whose second node is SIGKILLed (raylet, workers) after step 15;

each against the same config with no fault, in the same cluster. Periodic checkpoints every 10
steps, 40 steps. Writes bench/results/node_recovery.json and the `node_recovery` section of
docs/benchmarks.md.

    RAYFT_HOME=/tmp/rh .venv/bin/python bench/node_recovery.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
from docs_section import write_section  # noqa: E402
from local_cluster import RAY, LocalCluster  # noqa: E402

STEPS, SAVE, FAULT_AFTER = 40, 10, 15
SETS = ["model.name=builtin:tiny-random", f"data.path={REPO / 'rayft/demo/extract_orders.jsonl'}",
        "data.template=alpaca", "data.max_length=160", "data.eval_split=0", "eval.enabled=false",
        "training.logging_steps=1", "training.batch_size=2", "training.lr=1e-3", f"training.max_steps={STEPS}",
        f"training.save_steps={SAVE}", "scaling.resources_per_worker={CPU: 1}", "tracking.tensorboard=false",
        "scaling.max_failures=2", "scaling.placement_strategy=SPREAD"]


def _step(stage: Path) -> int:
    try:
        return json.loads((stage / "progress.json").read_text()).get("global_step") or 0
    except (OSError, ValueError):
        return 0


def run(cluster: LocalCluster, storage: Path, name: str, extra: list[str], fault=None) -> dict:
    args = [a for s in [*SETS, f"storage.path={storage}", *extra] for a in ("--set", s)]
    stage = storage / name / "sft"
    t0 = time.time()
    with (storage / f"{name}.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "rayft", "train", str(REPO / "jobs/configs/sft_tiny.yaml"),
                                 *args, "--address", cluster.address, "--run-name", name], env=cluster.env,
                                stdout=log, stderr=subprocess.STDOUT)
        while fault and proc.poll() is None and _step(stage) < FAULT_AFTER:
            time.sleep(0.2)
        if fault and proc.poll() is None:
            fault(stage)
        proc.wait(timeout=1800)
    summary = json.loads((stage / "summary.json").read_text())
    return {"run": name, "status": summary["status"], "final_step": summary.get("global_step"),
            "steps_redone": summary.get("steps_redone", 0), "restarts": summary.get("restarts", 0),
            "resumed_from_step": summary.get("resumed_from_step"), "wall_s": round(time.time() - t0, 1),
            "resizes": summary.get("resizes", [])}


def main() -> int:
    storage = Path(tempfile.mkdtemp(prefix="rayft-bench-nodes-"))
    rows = []

    def drain(stage: Path) -> None:
        node = json.loads((stage / "attempts.jsonl").read_text().splitlines()[-1])["workers"][0]["node_id"]
        subprocess.run([RAY, "drain-node", "--address", cluster.address, "--node-id", node, "--reason",
                        "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "bench", "--deadline-remaining-seconds",
                        "12"], env=cluster.env, check=True, capture_output=True, timeout=120)

    cases = [("preemption notice, checkpoint_on_preemption: true", ["scaling.num_workers=1"], "drain"),
             ("preemption notice, checkpoint_on_preemption: false",
              ["scaling.num_workers=1", "scaling.checkpoint_on_preemption=false"], "drain"),
             ("node killed (elastic 1-2 workers)", ["scaling.num_workers=1-2"], "kill")]
    for i, (label, extra, fault) in enumerate(cases):
        cluster = LocalCluster(["node_a", "node_b"], os.environ.get("RAYFT_HOME", str(Path.home() / ".cache/rayft")))
        cluster.start()
        try:
            baseline = run(cluster, storage, f"base{i}", extra)
            faulty = run(cluster, storage, f"fault{i}", extra,
                         drain if fault == "drain" else (lambda stage: cluster.kill_node("node_b")))
        finally:
            cluster.stop()
        row = {"case": label, "baseline_wall_s": baseline["wall_s"], **faulty,
               "wall_lost_s": round(faulty["wall_s"] - baseline["wall_s"], 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"rows": rows, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
              "command": "RAYFT_HOME=/tmp/rh .venv/bin/python bench/node_recovery.py"}
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "node_recovery.json").write_text(json.dumps(result, indent=2) + "\n")
    table = "\n".join(f"| {r['case']} | {r['status']}, step {r['final_step']} / {STEPS} | {r['restarts']} | "
                      f"{r['resumed_from_step']} | {r['steps_redone']} | {r['wall_s']:.0f} s vs {r['baseline_wall_s']:.0f} s "
                      f"(+{r['wall_lost_s']:.0f} s) |" for r in rows)
    body = f"""## Recovery when a node goes: preemption notice vs none, and a node killed

Tiny-model SFT, {STEPS} steps, a periodic checkpoint every {SAVE}, on a local multi-node Ray cluster
(head + two 1-CPU worker nodes on 127.0.0.1, tests/local_cluster.py); the fault comes after step
{FAULT_AFTER}. Drain: `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION` on the worker's node
with a 12 s deadline (a spot reclaim's notice, or a KubeRay pod's preStop hook). Kill: the second
node's `ray start` tree SIGKILLed, no notice, on an elastic 1-2 worker stage. Wall: the faulty run
against the same config without the fault, in the same cluster (it includes the restart: new
worker processes, model load, checkpoint restore, and for the drain the wait up to its deadline).

| case | result | restarts | resumed from step | steps redone | wall vs no fault |
|---|---|---|---|---|---|
{table}

Measured on {result['machine']}, {result['date']}, with the command:

    {result['command']}
"""
    write_section(REPO / "docs" / "benchmarks.md", "node_recovery", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
