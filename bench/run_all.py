"""`make bench`: run every benchmark in bench/ and regenerate docs/benchmarks.md.

Each benchmark script owns one section of docs/benchmarks.md (between its BEGIN/END markers) and
writes it with its machine, versions, date and command. This runner runs them one after another
(never in parallel: they measure the machine), then rewrites the `suite` section at the top: when
the suite ran, on what, and each benchmark's command, status and wall time. A benchmark that
needs something this machine lacks (../shared/data, a GPU) is listed as skipped with the reason.

    .venv/bin/python bench/run_all.py [--only NAME ...] [--list] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from docs_section import write_section  # noqa: E402


@dataclass(frozen=True)
class Bench:
    name: str  # its docs section (and bench/results/<name>.json)
    what: str
    args: tuple[str, ...] = ()  # the arguments the published figures were made with
    quick_args: tuple[str, ...] = ()  # --quick: fewer repeats / steps, for a smoke run of the suite
    needs: tuple[str, ...] = ()  # "shared-data", "gpu", "vllm"
    script: str = ""  # bench/<script>.py; default: the name

    @property
    def path(self) -> str:
        return f"bench/{self.script or self.name}.py"


# Published arguments are sized for a 2-core CPU machine: there (2026-12-02/03) they took 518 + 1183 +
# 172 + 637 + 530 + 965 + 1406 + 179 + 1005 s, so a whole pass is about 1.8 hours. Run it alone: other
# load distorts the timing figures, and Ray's PlacementGroupCleaner can tear down a starved run.
BENCHES: tuple[Bench, ...] = (
    Bench("sft_throughput", "SFT tokens/s, rayft (1 Ray worker) vs a plain TRL script", ("--steps", "10", "--wait-quiet", "120"),
          ("--repeats", "1")),
    Bench("packing", "packing vs dynamic padding vs pad-to-max", (), ("--repeats", "1"), ("shared-data",)),
    Bench("ppo_split", "PPO generation/training split and memory, shared vs copied reference", ("--steps", "3")),
    Bench("memory_strategies", "peak memory per worker vs rayft plan's estimate: strategies, stages, checkpointing",
          (), ("--cases", "lora-ddp,reward-ckpt"), ("shared-data",)),
    Bench("recovery", "steps redone after a worker kill vs the checkpoint interval", ("--baseline",)),
    Bench("node_recovery", "steps redone and wall lost when a node goes: preemption notice (on / off) and a kill"),
    Bench("tune_efficiency", "ASHA vs running every trial to the end", ("--trials", "9", "--steps", "32"),
          ("--trials", "6", "--steps", "8")),
    Bench("lamini_alignment", "held-out ROUGE-L: base vs SFT vs SFT -> on-policy DPO (dpo_lamini.yaml) on the Lamini docs",
          ("--sft-steps", "50", "--eval-split", "0.3", "--arms", "online", "--eval-examples", "1000",
           "--max-new-tokens", "64"),
          ("--sft-steps", "20", "--pairs", "40", "--dpo-steps", "10", "--eval-examples", "10", "--arms", "dpo",
           "recipe"), ("shared-data",)),
    Bench("reward_quality", "reward stage held-out accuracy vs length and base-likelihood baselines (embedded)",
          ("--epochs", "2", "--lr", "5e-4", "--r", "16"), ("--epochs", "0.3")),
    Bench("serve_throughput", "serving requests/s and latency, batching vs none; adapter switching (tiny model)"),
    Bench("serve_engines", "rayft's engine vs vLLM (Ray Serve LLM): req/s, tok/s, TTFT, latency (embedded; .venv-vllm)",
          ("--concurrency", "1", "4", "16"), ("--concurrency", "1", "4"), ("vllm",)),
    Bench("serve_throughput_embedded", "serving requests/s and latency, batching vs none (embedded 135M model)",
          ("--model", "builtin:smollm2-135m-instruct", "--skip-adapters", "--section", "serve_throughput_embedded"),
          ("--model", "builtin:smollm2-135m-instruct", "--skip-adapters", "--section", "serve_throughput_embedded",
           "--max-tokens", "8"), script="serve_throughput"),
    Bench("ray_train_overhead", "fixed cost of a short Ray Train stage: wall, first step, CPU share", ("--runs", "3")),
    Bench("eval_benchmarks", "MMLU subset base vs demo / Lamini SFT adapters (lm-eval); arena base vs SFT vs SFT -> DPO",
          (), ("--limit", "5", "--sft-steps", "4", "--pairs", "4", "--dpo-steps", "2", "--judge-pairs", "8",
               "--judge-steps", "2", "--arena-prompts", "4", "--subjects", "anatomy"), ("shared-data",)),
    Bench("gpu_training", "GPU: ZeRO-3 + bf16 full fine-tune vs QLoRA of a ~1B Llama: tokens/s, peak GPU memory, MFU",
          (), ("--steps", "10"), ("gpu",)),
    Bench("generation", "generation engines hf vs vLLM: eval, on-policy pairs, teacher data, Ray Data LLM (embedded)",
          (), ("--quick",), ("shared-data", "vllm")),
    Bench("rollouts", "GRPO rollouts in the training worker (hf) vs on a vLLM engine actor (embedded)",
          ("--steps", "8"), ("--steps", "2"), ("vllm",)),
)

# Scripts in bench/ that are not benchmarks themselves.
HELPERS = {"run_all", "docs_section", "plain_trl_sft", "reward_set"}


def missing(bench: Bench) -> str | None:
    """Why `bench` cannot run here, or None."""
    if not (ROOT / bench.path).is_file():
        return f"{bench.path} is not in this checkout"
    if "shared-data" in bench.needs and not (ROOT.parent / "shared" / "data").is_dir():
        return "../shared/data is absent"
    if "vllm" in bench.needs and not (ROOT / ".venv-vllm" / "bin" / "python").is_file():
        return "no .venv-vllm (make setup-vllm)"
    if "gpu" in bench.needs:
        try:
            import torch

            if not torch.cuda.is_available():
                return "no GPU on this machine"
        except ImportError:
            return "torch is not installed"
    return None


def command(bench: Bench, quick: bool) -> list[str]:
    return [sys.executable, bench.path, *(bench.quick_args if quick else bench.args)]


def machine() -> str:
    from importlib import metadata

    names = ("torch", "ray", "transformers", "trl", "peft", "deepspeed")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return (f"{os.cpu_count()} CPU cores, {platform.platform()}, Python {platform.python_version()}; "
            + ", ".join(found))


def write_suite(docs: Path, record_path: Path, record: dict) -> None:
    """Save the suite's record and rewrite the `suite` section of the docs from it."""
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    rows = []
    for b in BENCHES:
        r = record.get(b.name)
        if r is None:
            rows.append(f"| {b.name} | {b.what} | not run yet | - | - | `{' '.join(command(b, False)[1:])}` |")
        else:
            wall = "-" if r["wall_s"] is None else str(r["wall_s"])
            rows.append(f"| {b.name} | {b.what} | {r['status']} | {wall} | {r['date']} | `{r['command']}` |")
    body = "\n".join([
        "## The suite",
        "",
        f"`make bench` (= `.venv/bin/python bench/run_all.py`) runs every benchmark below, one after another, and "
        f"rewrites this table; `--only NAME ...` reruns some and keeps the other rows. Last written "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}; machine: {machine()}. Each section below was written by the "
        "benchmark named in it, with its own command and date; a skipped benchmark's section keeps its last figures.",
        "",
        "| benchmark | what | status | wall s | run at | command |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    write_section(docs, "suite", body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--quick", action="store_true", help="fewer repeats: a smoke run, not figures to publish")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    known = {b.name for b in BENCHES}
    if args.only and set(args.only) - known:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(set(args.only) - known))}; known: {', '.join(sorted(known))}")
    selected = [b for b in BENCHES if not args.only or b.name in args.only]
    if args.list:
        for b in selected:
            why = missing(b)
            print(f"{b.name:26s} {b.what}" + (f"  [skipped: {why}]" if why else ""))
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("RAYFT_HOME", str(Path.home() / ".cache" / "rayft"))
    # The suite's record of the last run of every benchmark, so that `--only X` updates X's row and keeps the rest.
    default_docs = args.docs.resolve() == (ROOT / "docs" / "benchmarks.md").resolve()
    record_path = ROOT / "bench" / "results" / "suite.json" if default_docs else args.docs.with_suffix(".suite.json")
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    failed = 0
    write_suite(args.docs, record_path, record)
    for b in selected:
        why = missing(b)
        cmd = command(b, args.quick)
        shown = " ".join(["RAYFT_HOME=...", ".venv/bin/python", *cmd[1:]])
        now = time.strftime("%Y-%m-%d %H:%M")
        if why:
            print(f"[bench] {b.name}: skipped ({why})", flush=True)
            record[b.name] = {"status": f"skipped: {why}", "wall_s": None, "command": shown, "date": now}
            write_suite(args.docs, record_path, record)
            continue
        print(f"[bench] {b.name}: {shown}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        wall = time.time() - t0
        status = "ok" if rc == 0 else f"failed (exit {rc})"
        failed += rc != 0
        print(f"[bench] {b.name}: {status} in {wall:.0f} s", flush=True)
        record[b.name] = {"status": status + (" (--quick)" if args.quick else ""), "wall_s": round(wall),
                          "command": shown, "date": now}
        write_suite(args.docs, record_path, record)  # after each one: an interrupted suite keeps what it measured
    print(f"[bench] {len(selected) - failed} of {len(selected)} done or skipped; docs: {args.docs}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
