"""SFT throughput: rayft with 1 Ray worker vs a plain single-process TRL script, one session.

Runs bench/plain_trl_sft.py and `rayft train bench/configs/sft_bench.yaml` (1 worker, same torch
thread count) as subprocesses, interleaved (plain, rayft, plain, rayft, ...), each once the machine
is idle, and compares medians of tokens/s (TRL's num_tokens / train_runtime), time from command
start to the end of the first optimizer step, and wall time; records how much CPU other processes
took meanwhile (noise). Writes bench/results/sft_throughput.json and docs/benchmarks.md's section.

    RAYFT_HOME=... .venv/bin/python bench/sft_throughput.py [--repeats 2] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- BEGIN sft_throughput -->", "<!-- END sft_throughput -->"
INTRO = ("# Benchmarks\n\nMeasured figures, each section written by the script it names "
         "(re-run the command to refresh it).\n")
METRICS = [("tokens_per_s", "tokens/s (num_tokens / train_runtime)", "{:,.1f}"),
           ("time_to_first_step_s", "time to first optimizer step (s)", "{:.1f}"),
           ("train_runtime_s", "train runtime (s)", "{:.1f}"),
           ("wall_s", "wall time of the command (s)", "{:.1f}")]


def _proc_cpu() -> tuple[float, dict[int, tuple[int, float]]]:
    """(busy CPU seconds of the whole machine, {pid: (ppid, CPU seconds)}) now, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    t = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    procs = {}
    for d in Path("/proc").iterdir():
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split() if d.name.isdigit() else None
        except OSError:
            continue
        if f:
            procs[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)
    return (sum(t) - t[3] - t[4]) / tick, procs


def machine_busy(seconds: float = 5.0) -> float:
    """CPU cores in use on the machine over `seconds`."""
    m0 = _proc_cpu()[0]
    time.sleep(seconds)
    return (_proc_cpu()[0] - m0) / seconds


def run(cmd: list[str], log: Path, wait_quiet: float) -> tuple[float, str, dict]:
    """Run `cmd` once the machine is idle (or after `wait_quiet` s); returns its wall time, stdout and
    noise figures: the CPU seconds that other processes used meanwhile (machine minus our tree)."""
    waited = time.time()
    while time.time() - waited < wait_quiet and machine_busy() > 0.3:
        pass  # machine_busy sleeps 5 s
    waited = time.time() - waited
    t0, (m0, _) = time.time(), _proc_cpu()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ours: dict[int, float] = {}  # CPU seconds per process of our tree, at its last sample
    (reader := threading.Thread(target=lambda: setattr(proc, "out", proc.communicate()))).start()
    while reader.is_alive():  # sample our process tree's CPU (Ray's processes included) every second
        _, procs = _proc_cpu()
        tree, grown = set(), {proc.pid}
        while grown != tree:
            tree, grown = grown, grown | {q for q, (pp, _) in procs.items() if pp in grown}
        ours.update({q: max(ours.get(q, 0.0), procs[q][1]) for q in tree if q in procs})
        reader.join(1.0)
    wall, (m1, _) = time.time() - t0, _proc_cpu()
    stdout, stderr = proc.out
    log.write_text(stderr + "\n--- stdout ---\n" + stdout)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{log.read_text()[-3000:]}")
    other = max(0.0, (m1 - m0) - sum(ours.values()))
    return wall, stdout, {"waited_for_quiet_s": round(waited, 1), "own_cpu_s": round(sum(ours.values()), 1),
                          "other_procs_cpu_s": round(other, 1), "other_procs_cores": round(other / wall, 2)}


def plain(a, cfg, work: Path, i: int) -> dict:
    t = cfg.stages[0].training
    cmd = [sys.executable, str(ROOT / "bench" / "plain_trl_sft.py"), "--steps", str(a.steps),
           "--threads", str(a.threads), "--batch-size", str(t.batch_size), "--lr", str(t.lr),
           "--seed", str(t.seed), "--logging-steps", str(t.logging_steps)]
    wall, out, noise = run(cmd, work / f"plain{i}.log", a.wait_quiet)
    result = json.loads([ln for ln in out.splitlines() if ln.startswith("{\"tokens_per_s\"")][-1])
    return {**result, "wall_s": wall, **noise}


def rayft(a, work: Path, i: int) -> dict:
    storage = work / f"rayft{i}"
    cmd = [sys.executable, "-m", "rayft", "train", str(a.config), "--set", f"training.max_steps={a.steps}",
            "--set", "scaling.num_workers=1", "--set", f"scaling.resources_per_worker.CPU={a.threads}",
            "--set", f"scaling.threads_per_worker={a.threads}", "--set", f"storage.path={storage}"]
    wall, _, noise = run(cmd, work / f"rayft{i}.log", a.wait_quiet)
    summary = json.loads(next(storage.glob("*/sft/summary.json")).read_text())
    keys = ("tokens_per_s", "num_tokens", "train_runtime_s", "global_step", "time_to_first_step_s", "train_loss")
    return {**{k: summary.get(k) for k in keys}, "wall_s": wall, **noise}


def median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k, _, _ in METRICS}


def write_docs(report: dict, path: Path) -> None:
    p, r = report["median"]["plain"], report["median"]["rayft"]
    rows = [f"| {label} | {fmt.format(p[k])} | {fmt.format(r[k])} | {r[k] / p[k]:.3f} |"
            for k, label, fmt in METRICS]
    per = ", ".join(f"{x:.3f}" for x in report["ratio_tokens_per_s_per_repeat"])
    noise = "; ".join(f"{p['other_procs_cores']:.2f}, {r['other_procs_cores']:.2f}"
                      for p, r in zip(report["runs"]["plain"], report["runs"]["rayft"]))
    m, v = report["machine"], report["versions"]
    section = "\n".join([
        BEGIN, "## SFT throughput: rayft (1 Ray worker) vs plain TRL", "",
        f"LoRA SFT of the embedded SmolLM2-135M-Instruct on the demo data ({report['steps']} optimizer steps, "
        f"batch size {report['batch_size']}, {report['threads']} torch threads each), "
        "`rayft train bench/configs/sft_bench.yaml` with 1 Ray worker vs `bench/plain_trl_sft.py` (one "
        "process, no Ray, same model, token rows, LoRA and trainer settings). Interleaved in one session, "
        f"{report['repeats']} runs each; medians. Both evaluate the held-out rows once and save the adapter "
        "after training (in the wall time, not in the throughput).", "",
        "| metric | plain TRL | rayft, 1 worker | ratio rayft/plain |", "|---|---|---|---|", *rows, "",
        f"Throughput ratio **{report['ratio_tokens_per_s']:.3f}** (requirement >= 0.95: "
        f"{'met' if report['meets_requirement'] else 'NOT met'}); per repeat: {per}. Other processes on the "
        f"machine used {noise} CPU cores on average during the runs (plain, rayft per repeat; noise). "
        "Time to first step counts from the command's start (imports, Ray start-up, model load, data).", "",
        f"- machine: {m['nproc']} CPU cores, `{m['platform']}`, Python {m['python']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "python"),
        f"- date: {report['date']}",
        f"- command: `{report['command']}`", "- raw figures: `bench/results/sft_throughput.json`", END])
    text = path.read_text() if path.exists() else INTRO
    if BEGIN in text and END in text:
        text = text.split(BEGIN, 1)[0] + section + text.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each (and Ray worker CPUs)")
    ap.add_argument("--wait-quiet", type=float, default=300, help="max s to wait for an idle machine per run")
    ap.add_argument("--config", type=Path, default=ROOT / "bench" / "configs" / "sft_bench.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sft_throughput.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from rayft.config.load import load_pipeline
    from rayft.records.rundir import versions

    cfg = load_pipeline(a.config, [f"training.max_steps={a.steps}"]).pipeline
    runs: dict[str, list[dict]] = {"plain": [], "rayft": []}
    with tempfile.TemporaryDirectory(prefix="rayft-bench-") as tmp:
        work = Path(tmp)
        for i in range(a.repeats):
            for name in ("plain", "rayft"):
                res = plain(a, cfg, work, i) if name == "plain" else rayft(a, work, i)
                runs[name].append(res)
                print(f"[{i + 1}/{a.repeats}] {name}: {res['tokens_per_s']:.1f} tok/s, first step "
                      f"{res['time_to_first_step_s']:.1f} s, wall {res['wall_s']:.1f} s, other processes' CPU "
                      f"{res['other_procs_cores']:.2f} cores", flush=True)
    if {r["num_tokens"] for r in runs["plain"] + runs["rayft"]} != {runs["plain"][0]["num_tokens"]}:
        print("warning: plain and rayft trained on different token counts", file=sys.stderr)
    med = {k: median(v) for k, v in runs.items()}
    ratio = med["rayft"]["tokens_per_s"] / med["plain"]["tokens_per_s"]
    exe = os.path.relpath(sys.executable, ROOT)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": shlex.join([exe, os.path.relpath(Path(__file__).resolve(), ROOT), *sys.argv[1:]]),
        "machine": {"nproc": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version()},
        "versions": versions(), "steps": a.steps, "threads": a.threads, "repeats": a.repeats,
        "batch_size": cfg.stages[0].training.batch_size,
        "ratio_tokens_per_s": ratio, "meets_requirement": ratio >= 0.95,
        "ratio_tokens_per_s_per_repeat": [r["tokens_per_s"] / p["tokens_per_s"]
                                          for p, r in zip(runs["plain"], runs["rayft"])],
        "median": med, "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    write_docs(report, a.docs)
    keys = ("ratio_tokens_per_s", "meets_requirement", "ratio_tokens_per_s_per_repeat", "median")
    print(json.dumps({k: report[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
