"""Did tuning make the model forget, and which tuned model is best? `eval.benchmarks` and
`rayft eval arena` on real adapters of the embedded SmolLM2-135M-Instruct:

1. the demo adapter (`rayft demo`, order extraction) and the Lamini SFT adapter
   (jobs/configs/sft_lamini.yaml) against the base model on a stated MMLU subset
   (rayft_mmlu_<subject> over ../shared/data/mmlu, lm-evaluation-harness, 0-shot as the task files
   say, --limit questions per subject), with the change against base and the forgetting flag;
2. the arena over base, Lamini SFT and SFT -> DPO (jobs/configs/dpo_lamini.yaml, on-policy pairs
   built in the run) on held-out Lamini questions, judged by a reward stage trained on Lamini
   training questions (reference answer chosen over the base model's answer).

Every step runs rayft's own command line and is kept in --keep (a rerun skips finished steps); the
flags make it smaller on 2 CPU cores, and the figures say what was run. Writes
bench/results/eval_benchmarks.json and its section of docs/benchmarks.md.

    RAYFT_HOME=... .venv/bin/python bench/eval_benchmarks.py [--keep DIR] [--subjects a,b] [--limit 100]
        [--sft-steps 60] [--pairs 80] [--dpo-steps 30] [--judge-pairs 240] [--judge-steps 60] [--arena-prompts 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from docs_section import write_section  # noqa: E402

MMLU = REPO.parent / "shared" / "data"
SUBJECTS = ("high_school_geography", "high_school_us_history", "marketing", "nutrition", "sociology",
            "world_religions", "computer_security", "astronomy")
RAYFT = [sys.executable, "-m", "rayft"]


def run(args: list[str], log: Path) -> float:
    t0 = time.time()
    print("$ rayft " + " ".join(args), flush=True)
    with log.open("w") as fh:
        done = subprocess.run([*RAYFT, *args], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}); see {log}")
    return time.time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", default="/tmp/rayft-eval-bench")
    parser.add_argument("--subjects", default=",".join(SUBJECTS))
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--sft-steps", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=80)
    parser.add_argument("--dpo-steps", type=int, default=30)
    parser.add_argument("--judge-pairs", type=int, default=240)
    parser.add_argument("--judge-steps", type=int, default=60)
    parser.add_argument("--arena-prompts", type=int, default=60)
    args = parser.parse_args()
    keep = Path(args.keep).resolve()
    keep.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    storage = f"storage.path={keep}"

    def step(name: str, done: Path, argv: list[str]) -> None:
        if done.exists():
            print(f"[{name}] kept from an earlier run: {done}")
            return
        seconds[name] = round(run(argv, keep / f"{name}.log"), 1)

    step("demo", keep / "demo" / "sft" / "adapter",
         ["demo", "--set", storage, "--set", "run_name=demo", "--set", "eval.enabled=false"])
    sft = str(REPO / "jobs/configs/sft_lamini.yaml")
    step("lamini_sft", keep / "sft-lamini" / "sft" / "adapter",
         ["train", sft, "--set", storage, "--set", f"training.max_steps={args.sft_steps}", "--set", "eval.enabled=false"])
    step("lamini_dpo", keep / "dpo-lamini" / "dpo" / "adapter",
         ["train", str(REPO / "jobs/configs/dpo_lamini.yaml"), "--set", storage,
          "--set", f"adapter.init_from={keep / 'sft-lamini' / 'sft' / 'adapter'}",
          "--set", f"stages.0.pairs.limit={args.pairs}", "--set", "stages.0.pairs.samples=2",
          "--set", f"training.max_steps={args.dpo_steps}", "--set", "eval.enabled=false"])
    pairs = keep / "judge_pairs.jsonl"
    step("judge_pairs", pairs, ["data", "preference", sft, "--out", str(pairs), "--limit", str(args.judge_pairs),
                                "--set", "eval.max_new_tokens=64"])
    judge_config = keep / "judge.yaml"
    judge_config.write_text(yaml.safe_dump({
        "run_name": "judge", "model": {"name": "builtin:smollm2-135m-instruct"},
        "adapter": {"type": "lora", "r": 16, "alpha": 32}, "storage": {"path": str(keep)},
        "data": {"path": str(pairs), "format": "preference", "template": "qa", "max_length": 320, "eval_split": 0.1},
        "stages": [{"type": "reward"}], "eval": {"enabled": False},
        "training": {"max_steps": args.judge_steps, "batch_size": 4, "lr": 5e-4, "eval_steps": 20,
                     "gradient_checkpointing": False},
        "scaling": {"num_workers": 1}}))
    step("judge_reward", keep / "judge" / "reward" / "summary.json", ["train", str(judge_config)])

    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()]
    bench_config = keep / "mmlu.yaml"
    bench_config.write_text(yaml.safe_dump({
        "model": {"name": "builtin:smollm2-135m-instruct"}, "data": yaml.safe_load(Path(sft).read_text())["data"]
        | {"path": str(REPO.parent / "shared/data/lamini_docs.jsonl")}, "stages": [{"type": "sft"}],
        "storage": {"path": str(keep)},
        "eval": {"models": {"demo": str(keep / "demo" / "sft"), "lamini-sft": str(keep / "sft-lamini" / "sft")},
                 "benchmarks": {"tasks": [f"rayft_mmlu_{s}" for s in subjects], "data_dir": str(MMLU),
                                "limit": args.limit, "batch_size": 8}}}))
    step("mmlu", keep / "mmlu" / "eval.json", ["eval", str(bench_config), "--benchmarks-only", "--out", str(keep / "mmlu")])

    arena_config = keep / "arena.yaml"
    arena_config.write_text(yaml.safe_dump({
        "model": {"name": "builtin:smollm2-135m-instruct"}, "data": yaml.safe_load(Path(sft).read_text())["data"]
        | {"path": str(REPO.parent / "shared/data/lamini_docs.jsonl")}, "stages": [{"type": "sft"}],
        "storage": {"path": str(keep)},
        "eval": {"max_new_tokens": 64, "arena": {
            "models": {"base": "base", "lamini-sft": str(keep / "sft-lamini" / "sft"),
                       "lamini-sft-dpo": str(keep / "dpo-lamini" / "dpo")},
            "judge": {"reward": str(keep / "judge" / "reward")}, "num_prompts": args.arena_prompts,
            "bootstrap": 500}}}))
    step("arena", keep / "arena" / "eval.json", ["eval", "arena", str(arena_config), "--out", str(keep / "arena")])

    mmlu = json.loads((keep / "mmlu" / "eval.json").read_text())["benchmarks"]
    arena = json.loads((keep / "arena" / "eval.json").read_text())["arena"]
    judge = json.loads((keep / "judge" / "reward" / "summary.json").read_text())
    result = {"subjects": subjects, "limit": args.limit, "settings": vars(args), "seconds": seconds,
              "mmlu": mmlu, "arena": {k: arena[k] for k in ("ratings", "winrate", "battles", "prompts", "judge")},
              "judge": {k: judge.get(k) for k in ("eval_accuracy", "eval_margin", "global_step")},
              "commands": {label: m["command"] for label, m in mmlu["models"].items()}}
    out = REPO / "bench" / "results" / "eval_benchmarks.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_section(REPO / "docs" / "benchmarks.md", "eval_benchmarks", _markdown(result, keep))
    print(f"wrote {out}")


def _markdown(result: dict, keep: Path) -> str:
    from rayft.eval.benchmarks import benchmark_table

    header, rows = benchmark_table(result["mmlu"])
    s = result["settings"]
    lines = [
        "## Forgetting and ranking: MMLU subset and arena (bench/eval_benchmarks.py)", "",
        f"`RAYFT_HOME=... .venv/bin/python bench/eval_benchmarks.py --limit {s['limit']} --sft-steps {s['sft_steps']} "
        f"--pairs {s['pairs']} --dpo-steps {s['dpo_steps']} --judge-pairs {s['judge_pairs']} --judge-steps "
        f"{s['judge_steps']} --arena-prompts {s['arena_prompts']} --subjects {s['subjects']}` on 2 CPU cores. Adapters: the demo's "
        f"(`rayft demo`), Lamini SFT (jobs/configs/sft_lamini.yaml, {s['sft_steps']} steps), SFT -> DPO "
        f"(jobs/configs/dpo_lamini.yaml, {s['pairs']} on-policy prompts x 2 samples + greedy, {s['dpo_steps']} steps).",
        "", f"**MMLU, {len(result['subjects'])} subjects, the first {result['limit']} questions of each** "
        "(rayft_mmlu_<subject>: lm-eval's MMLU prompt over ../shared/data/mmlu, 0-shot; % ± stderr; in brackets the "
        "change against base ± its paired stderr):", "",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(c) + " |" for c in rows), "",
        "Reading: no subject moved by more than one paired standard error (no FORGETTING flag): at 40 questions "
        "a subject, only large losses would show; `--limit` with every question (or `rayft_mmlu`, all 57 subjects) "
        f"is the real check (this subset, {len(result['subjects'])} x {result['limit']} questions for "
        f"{len(result['mmlu']['models'])} models, took {result['mmlu'].get('wall_s', '?')} s here).", "",
        "Each figure equals lm-eval's own command line on the same task files (tests/test_benchmarks.py checks it); "
        "the command of each model:", "", *(f"- {label}: `{cmd}`" for label, cmd in result["commands"].items()), "",
        f"**Arena** on {result['arena']['prompts']} held-out Lamini questions (the SFT config's seeded 10% split), "
        f"judged by a reward stage trained on Lamini training questions (reference answer chosen over the base "
        f"model's; its held-out pair accuracy {100 * (result['judge'].get('eval_accuracy') or 0):.0f}%), every pair "
        f"in both orders: {result['arena']['battles']} verdicts; Bradley-Terry, base = 1000, 95% bootstrap intervals:", "",
        "| model | rating | 95% interval | wins | losses | ties |", "|---|---|---|---|---|---|",
        *(f"| {r['model']} | {r['rating']:.0f} | {r['low']:.0f} .. {r['high']:.0f} | {r['wins']} | {r['losses']} | "
          f"{r['ties']} |" for r in result["arena"]["ratings"]), "",
        "Reading: SFT -> DPO beats SFT, which beats base, in the judge's eyes; SFT's and DPO's intervals overlap "
        "at 30 prompts. The judge was trained to prefer the reference answers over the base model's, which is "
        "what SFT imitates, so this ranks closeness to the Lamini docs, not general helpfulness.", "",
        "Wall time of the steps run in the last invocation (s; earlier steps were kept): "
        + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
