"""PPO step time split (generation vs training) and peak memory on the embedded model, with the
reference sharing the policy's weights (adapter disabled) vs a separate frozen copy.

Each mode runs in its own process (peak RSS is per process), one worker, no Ray, the same seed,
prompts and settings; modes are interleaved over --repeats. Writes bench/results/ppo_split.json
and the `ppo_split` section of docs/benchmarks.md.

    RAYFT_HOME=... .venv/bin/python bench/ppo_split.py [--steps 4] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from docs_section import write_section  # noqa: E402


def run_mode(reference: str, steps: int) -> dict:
    import torch

    from rayft.config.load import validate
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.rewards import short_answer
    from rayft.rl.ppo_trainer import PPOTrainer
    from rayft.stages import get_stage
    from rayft.stages.ppo import frozen_reference_copy

    torch.set_num_threads(2)
    torch.manual_seed(0)
    pipeline = validate({"data": {"path": str(REPO / "rayft/demo/extract_orders.jsonl"), "template": "chat",
                                  "eval_split": 0},
                         "stages": [{"type": "ppo", "rewards": ["rayft.rewards:short_answer"], "reference": reference,
                                     "max_new_tokens": 32, "minibatch_size": 4, "ppo_epochs": 2,
                                     "training": {"max_steps": steps, "batch_size": 4, "lr": 3e-4}}]})
    stage = pipeline.stages[0]
    path = resolve_model(pipeline.model.name)
    tokenizer = load_tokenizer(path)
    impl = get_stage("ppo")
    prompts = impl.prepare_data(stage, tokenizer).train.to_list()
    policy = impl.load_model(path, pipeline, pipeline.adapter, False)

    ref = frozen_reference_copy(pipeline, None, on_gpu=False) if reference == "copy" else None
    trainer = PPOTrainer(policy, tokenizer, stage, 3e-4, [short_answer], prompts, 4, 0, 1.0, print, ref_model=ref)
    history = [trainer.step() for _ in range(steps)]
    gen = sum(h["generation_s"] for h in history[1:])  # the first step warms up
    train = sum(h["training_s"] for h in history[1:])
    return {"reference": reference, "steps": steps, "generation_s_per_step": gen / (steps - 1),
            "training_s_per_step": train / (steps - 1), "generation_share": gen / (gen + train),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "reward_first": history[0]["reward"], "reward_last": history[-1]["reward"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.steps)))
        return 0
    runs: dict[str, list[dict]] = {"shared": [], "copy": []}
    for _ in range(args.repeats):
        for mode in runs:
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps)],
                                 capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "reference"}
               for mode, rs in runs.items()}
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "command": f"python bench/ppo_split.py --steps {args.steps} --repeats {args.repeats}",
              "modes": summary}
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "ppo_split.json").write_text(json.dumps(result, indent=2) + "\n")
    shared, copy = summary["shared"], summary["copy"]
    rows = ["| reference | generation s/step | training s/step | generation share | peak RSS MiB |",
            "|---|---|---|---|---|"]
    for mode, s in summary.items():
        rows.append(f"| {mode} | {s['generation_s_per_step']:.1f} | {s['training_s_per_step']:.1f} | "
                    f"{100 * s['generation_share']:.0f}% | {s['peak_rss_mib']:.0f} |")
    body = ["### PPO step split and memory (embedded model, 1 process, 2 threads)", "", *rows, "",
            f"Shared reference / separate copy: peak memory x{shared['peak_rss_mib'] / copy['peak_rss_mib']:.2f}, "
            f"step time x{(shared['generation_s_per_step'] + shared['training_s_per_step']) / (copy['generation_s_per_step'] + copy['training_s_per_step']):.2f}. "
            f"Batch 4 prompts, 32 new tokens, 2 PPO epochs; medians of {args.repeats} run(s), steps 2..{args.steps} "
            f"(step 1 warms up). {result['machine']}, {result['date']}. Both modes use the same seed, so "
            f"equal rewards (shared {shared['reward_first']:.3f} -> {shared['reward_last']:.3f}, copy "
            f"{copy['reward_first']:.3f} -> {copy['reward_last']:.3f}) show the two references compute the same "
            "thing. Peak memory is the robust figure; step times are sensitive to other load on the machine.", "",
            f"Command: `{result['command']}`"]
    write_section(REPO / "docs" / "benchmarks.md", "ppo_split", "\n".join(body))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
