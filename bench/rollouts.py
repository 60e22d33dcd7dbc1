"""GRPO rollouts in the training worker (hf) vs on a vLLM engine actor (`generation.engine: vllm`):
the same grpo stage of the embedded model (LoRA) run twice in one local Ray of 2 CPUs. hf: one
training worker with both CPUs (2 torch threads), generating with HF `generate`. vllm: one training
worker with 1 CPU and one vLLM engine actor (.venv-vllm) with the other; each step rank 0 saves the
LoRA adapter and the engine samples the step's completions from it. Reports wall per stage, the
time per optimizer step, and on vLLM the seconds spent generating and saving adapters (summary.json
`rollouts`), plus the engine's start-up apart.

    RAYFT_HOME=... .venv/bin/python bench/rollouts.py [--steps 8] [--prompts 2] [--generations 4] [--tokens 64]

Writes bench/results/rollouts.json and the `rollouts` section of docs/benchmarks.md.
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
VLLM_PYTHON = Path(os.environ.get("RAYFT_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python")).absolute()
sys.path.insert(0, str(ROOT / "bench"))

from docs_section import write_section  # noqa: E402


def run(engine: str, args: argparse.Namespace, storage: Path) -> dict:
    from rayft.config.load import load_pipeline
    from rayft.train.launch import run_pipeline

    batch = args.prompts * args.generations
    overrides = [
        f"model.name={args.model}", f"data.path={DEMO}", "data.template=alpaca", "data.eval_split=0",
        f"stages=[{{type: grpo, rewards: [rayft.rewards:length_penalty], num_generations: {args.generations}, "
        f"max_completion_length: {args.tokens}}}]", f"training.max_steps={args.steps}", f"training.batch_size={batch}",
        "training.logging_steps=1", "eval.enabled=false", "scaling.num_workers=1", f"storage.path={storage}",
        f"run_name={engine}", "tracking.tensorboard=false", "training.save_steps=1000"]
    if engine == "vllm":
        overrides += ["generation.engine=vllm", f"generation.vllm_python={VLLM_PYTHON}", "generation.cpus_per_engine=1",
                      "scaling.resources_per_worker={CPU: 1}"]
    else:
        overrides += ["scaling.resources_per_worker={CPU: 2}"]
    started = time.time()
    run_pipeline(load_pipeline(None, overrides))
    wall = time.time() - started
    summary = json.loads((storage / engine / "grpo" / "summary.json").read_text())
    row = {"engine": engine, "wall_s": round(wall, 1), "train_runtime_s": round(summary["train_runtime_s"], 1),
           "s_per_step": round(summary["train_runtime_s"] / summary["global_step"], 1),
           "steps": summary["global_step"], "rollouts": summary.get("rollouts")}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step (each sampled --generations times)")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64, help="max_completion_length")
    args = parser.parse_args()
    if not VLLM_PYTHON.is_file():
        sys.exit(f"bench/rollouts.py needs the vLLM environment at {VLLM_PYTHON} (make setup-vllm)")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    import ray

    storage = Path(tempfile.mkdtemp(prefix="rayft-rollouts-"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        rows = [run(engine, args, storage) for engine in ("hf", "vllm")]
    finally:
        ray.shutdown()
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "args": vars(args), "rows": rows}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "rollouts.json").write_text(json.dumps(result, indent=2) + "\n")
    write_section(ROOT / "docs" / "benchmarks.md", "rollouts", markdown(result))


def markdown(result: dict) -> str:
    a = result["args"]
    hf, vllm = (next(r for r in result["rows"] if r["engine"] == e) for e in ("hf", "vllm"))
    out = vllm["rollouts"] or {}
    command = (f"RAYFT_HOME=... .venv/bin/python bench/rollouts.py --steps {a['steps']} --prompts {a['prompts']} "
               f"--generations {a['generations']} --tokens {a['tokens']}")
    return "\n".join([
        "## GRPO rollouts: in the training worker (hf) vs on a vLLM engine",
        "",
        f"Command: `{command}` ({result['date']}, {result['machine']}, no GPU). One grpo stage of {a['model']} + "
        f"LoRA, {a['steps']} steps of {a['prompts']} prompts x {a['generations']} completions of up to {a['tokens']} "
        "tokens, in one local Ray of 2 CPUs: hf = one worker with both CPUs generating with HF `generate`; vllm = one "
        "worker with 1 CPU + one engine actor with the other, the step's LoRA adapter saved and loaded each step.",
        "",
        "| engine | stage wall s | train runtime s | s per step | of which generating s | saving adapters s |",
        "|---|---|---|---|---|---|",
        f"| hf | {hf['wall_s']} | {hf['train_runtime_s']} | {hf['s_per_step']} | - | - |",
        f"| vllm | {vllm['wall_s']} | {vllm['train_runtime_s']} | {vllm['s_per_step']} | {out.get('generate_s')} | "
        f"{out.get('save_s')} |",
        "",
        f"Per step, vLLM rollouts take **{hf['s_per_step'] / vllm['s_per_step']:.2f}x** the hf speed "
        f"(train runtime {hf['train_runtime_s']} s vs {vllm['train_runtime_s']} s); the stage's wall adds the "
        "engine's start-up on vllm.",
    ])


if __name__ == "__main__":
    main()
