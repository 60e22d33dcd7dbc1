"""SFT throughput: rayft with 1 Ray worker vs a plain single-process TRL script, one session.

Runs bench/plain_trl_sft.py and `rayft train bench/configs/sft_bench.yaml` (1 worker, same
torch thread count) as subprocesses, interleaved (plain, rayft, plain, rayft, ...), and compares
the medians: tokens/s (TRL's num_tokens / train_runtime), time from command start to the end of
the first optimizer step, and the wall time of each command. Writes
bench/results/sft_throughput.json and the `sft_throughput` section of docs/benchmarks.md.

    RAYFT_HOME=... .venv/bin/python bench/sft_throughput.py [--repeats 2] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
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


def busy_cpu_s() -> tuple[float, float]:
    """(CPU seconds used on the whole machine, CPU seconds of our finished children) so far."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        machine = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        machine = float("nan")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return machine, ru.ru_utime + ru.ru_stime


def run(cmd: list[str], log: Path) -> tuple[float, str, float]:
    """Run `cmd`; returns its wall time, stdout, and the CPU seconds other processes used meanwhile
    (a noise indicator: the machine's busy time minus our command's)."""
    t0, (m0, c0) = time.time(), busy_cpu_s()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    m1, c1 = busy_cpu_s()
    log.write_text(proc.stderr + "\n--- stdout ---\n" + proc.stdout)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{log.read_text()[-3000:]}")
    return wall, proc.stdout, max(0.0, (m1 - m0) - (c1 - c0))


def plain(a, cfg, work: Path, i: int) -> dict:
    t = cfg.stages[0].training
    cmd = [sys.executable, str(ROOT / "bench" / "plain_trl_sft.py"), "--steps", str(a.steps),
           "--threads", str(a.threads), "--batch-size", str(t.batch_size), "--lr", str(t.lr),
           "--seed", str(t.seed), "--logging-steps", str(t.logging_steps)]
    wall, out, other = run(cmd, work / f"plain{i}.log")
    result = json.loads([ln for ln in out.splitlines() if ln.startswith("{\"tokens_per_s\"")][-1])
    return {**result, "wall_s": wall, "other_procs_cpu_s": other}


def rayft(a, work: Path, i: int) -> dict:
    storage = work / f"rayft{i}"
    exe = Path(sys.executable).with_name("rayft")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rayft"]
    cmd += ["train", str(a.config), "--set", f"training.max_steps={a.steps}",
            "--set", "scaling.num_workers=1", "--set", f"scaling.resources_per_worker.CPU={a.threads}",
            "--set", f"scaling.threads_per_worker={a.threads}", "--set", f"storage.path={storage}"]
    wall, _, other = run(cmd, work / f"rayft{i}.log")
    summary = json.loads(next(storage.glob("*/sft/summary.json")).read_text())
    keys = ("tokens_per_s", "num_tokens", "train_runtime_s", "global_step", "time_to_first_step_s", "train_loss")
    return {**{k: summary.get(k) for k in keys}, "wall_s": wall, "other_procs_cpu_s": other}


def median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k, _, _ in METRICS}


def write_docs(report: dict, path: Path) -> None:
    p, r = report["median"]["plain"], report["median"]["rayft"]
    rows = [f"| {label} | {fmt.format(p[k])} | {fmt.format(r[k])} | {r[k] / p[k]:.3f} |"
            for k, label, fmt in METRICS]
    per = ", ".join(f"{x:.3f}" for x in report["ratio_tokens_per_s_per_repeat"])
    m, v = report["machine"], report["versions"]
    section = "\n".join([
        BEGIN,
        "## SFT throughput: rayft (1 Ray worker) vs plain TRL",
        "",
        f"LoRA SFT of the embedded SmolLM2-135M-Instruct on the demo data ({report['steps']} optimizer steps, "
        f"batch size {report['batch_size']}, {report['threads']} torch threads each), "
        "`rayft train bench/configs/sft_bench.yaml` with 1 Ray worker vs `bench/plain_trl_sft.py` (one "
        "process, no Ray, same model, token rows, LoRA and trainer settings). Interleaved in one session, "
        f"{report['repeats']} runs each; medians. Both evaluate the held-out rows once and save the adapter "
        "after training (in the wall time, not in the throughput).",
        "",
        "| metric | plain TRL | rayft, 1 worker | ratio rayft/plain |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Throughput ratio **{report['ratio_tokens_per_s']:.3f}** (requirement >= 0.95: "
        f"{'met' if report['meets_requirement'] else 'NOT met'}); per repeat: {per}. "
        "Time to first step counts from the command's start (imports, Ray start-up, model load, data).",
        "",
        f"- machine: {m['nproc']} CPU cores, `{m['platform']}`, Python {m['python']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "python"),
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        "- raw figures: `bench/results/sft_throughput.json`",
        END,
    ])
    text = path.read_text() if path.exists() else INTRO
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each (and Ray worker CPUs)")
    ap.add_argument("--config", type=Path, default=ROOT / "bench" / "configs" / "sft_bench.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sft_throughput.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from rayft.config_io import load_config
    from rayft.train.rundir import versions

    cfg = load_config(a.config, [f"training.max_steps={a.steps}"]).pipeline
    runs: dict[str, list[dict]] = {"plain": [], "rayft": []}
    with tempfile.TemporaryDirectory(prefix="rayft-bench-") as tmp:
        work = Path(tmp)
        for i in range(a.repeats):
            for name in ("plain", "rayft"):
                load = os.getloadavg()[0]
                res = plain(a, cfg, work, i) if name == "plain" else rayft(a, work, i)
                res["loadavg_1m_before"] = load
                runs[name].append(res)
                print(f"[{i + 1}/{a.repeats}] {name}: {res['tokens_per_s']:.1f} tok/s, first step "
                      f"{res['time_to_first_step_s']:.1f} s, wall {res['wall_s']:.1f} s, other processes' CPU "
                      f"{res['other_procs_cpu_s']:.0f} s", flush=True)
    if {r["num_tokens"] for r in runs["plain"] + runs["rayft"]} != {runs["plain"][0]["num_tokens"]}:
        print("warning: plain and rayft trained on different token counts", file=sys.stderr)
    med = {k: median(v) for k, v in runs.items()}
    ratio = med["rayft"]["tokens_per_s"] / med["plain"]["tokens_per_s"]
    try:
        exe = os.path.relpath(sys.executable, ROOT)
    except ValueError:
        exe = sys.executable
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": shlex.join([exe, os.path.relpath(Path(__file__).resolve(), ROOT), *sys.argv[1:]]),
        "machine": {"nproc": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version()},
        "versions": versions(),
        "steps": a.steps, "threads": a.threads, "repeats": a.repeats,
        "batch_size": cfg.stages[0].training.batch_size,
        "ratio_tokens_per_s": ratio, "meets_requirement": ratio >= 0.95,
        "ratio_tokens_per_s_per_repeat": [r["tokens_per_s"] / p["tokens_per_s"]
                                          for p, r in zip(runs["plain"], runs["rayft"])],
        "median": med, "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    write_docs(report, a.docs)
    print(json.dumps({k: report[k] for k in ("ratio_tokens_per_s", "meets_requirement",
                                             "ratio_tokens_per_s_per_repeat", "median")}, indent=2))


if __name__ == "__main__":
    main()
