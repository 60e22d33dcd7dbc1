"""Does a rayft reward stage learn a real preference? The embedded SmolLM2-135M-Instruct's reward
stage against two baselines, on held-out pairs of tasks it never saw in training.

Data: bench/reward_set.py (HH-shaped implicit-prompt transcripts, harmful requests -> refusal
chosen, benign requests on the same topics -> compliance chosen; length-matched templates, so
neither length nor wording separates the sides). The reward stage reads the files as they are
(`format: auto` -> preference_implicit), as `rayft train` would.

Baselines on the same held-out pairs:
- length: the longer answer wins;
- base implicit score: the base model's log p(answer | templated prompt), summed and per token
  (what a policy "prefers" before any reward training).

Writes bench/results/reward_quality.json and its section of docs/benchmarks.md.

    RAYFT_HOME=/tmp/rh .venv/bin/python bench/reward_quality.py [--epochs 2] [--lr 5e-4] [--r 16]
        [--workers 1] [--keep DIR]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from docs_section import write_section  # noqa: E402
from reward_set import build  # noqa: E402


def _config(storage: Path, data: Path, args: argparse.Namespace) -> dict:
    return {
        "run_name": "reward-quality", "storage": {"path": str(storage)},
        "model": {"name": "builtin:smollm2-135m-instruct"},
        "adapter": {"type": "lora", "r": args.r, "alpha": 2 * args.r},
        "data": {"path": str(data / "train.jsonl"), "eval_path": str(data / "heldout.jsonl"), "max_length": 256},
        "training": {"epochs": args.epochs, "lr": args.lr, "batch_size": 8, "logging_steps": 10,
                     "lr_scheduler": "linear", "warmup_ratio": 0.05},
        "scaling": {"num_workers": args.workers},
        "eval": {"num_examples": 1000, "batch_size": 16},
        "stages": [{"type": "reward"}],
    }


def _baselines(loaded, model_path: str) -> dict:
    """Length and base-model implicit score on the held-out pairs, as the reward stage sees them."""
    from rayft.eval.compare import held_out
    from rayft.metrics.teacher_forced import completion_logprobs, pairwise_accuracy
    from rayft.models.adapters import load_for_inference
    from rayft.models.loader import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    held = held_out(loaded, tokenizer)
    length = pairwise_accuracy([len(c) for c in held.references], [len(r) for r in held.rejected])
    model = load_for_inference(model_path, loaded.pipeline.model, None)
    chosen = completion_logprobs(model, tokenizer, held.prompts, held.references, 16)
    rejected = completion_logprobs(model, tokenizer, held.prompts, held.rejected, 16)
    n_c = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in held.references]
    n_r = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in held.rejected]
    return {"pairs": len(held.prompts), "length": length,
            "base_logp_sum": pairwise_accuracy(chosen, rejected),
            "base_logp_mean": pairwise_accuracy([c / n for c, n in zip(chosen, n_c)],
                                                [r / n for r, n in zip(rejected, n_r)])}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", help="folder for data and run (default: a temporary one)")
    parser.add_argument("--render", action="store_true", help="only rewrite the docs section from the saved result")
    args = parser.parse_args()
    saved = REPO / "bench" / "results" / "reward_quality.json"
    if args.render:
        write_section(REPO / "docs" / "benchmarks.md", "reward_quality", _body(json.loads(saved.read_text())))
        return 0
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ["RAY_ADDRESS"] = "local"
    import ray
    import yaml

    from rayft.config.load import load_pipeline
    from rayft.models.loader import resolve_model
    from rayft.train.run_and_evaluate import train_and_evaluate

    root = Path(args.keep or tempfile.mkdtemp(prefix="rayft-bench-reward-")).resolve()
    counts = build(root / "data")
    config = root / "reward.yaml"
    config.write_text(yaml.safe_dump(_config(root / "runs", root / "data", args)))
    loaded = load_pipeline(config)
    t0 = time.time()
    baselines = _baselines(loaded, resolve_model(loaded.pipeline.model.name))
    baseline_s = time.time() - t0
    ray.init(num_cpus=2, logging_level="ERROR")
    t1 = time.time()
    outcome = train_and_evaluate(loaded)
    train_s = time.time() - t1
    ray.shutdown()
    summary = json.loads((Path(outcome.run.run_dir) / "reward" / "summary.json").read_text())
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
        "command": f"RAYFT_HOME=/tmp/rh .venv/bin/python bench/reward_quality.py --epochs {args.epochs} "
                   f"--lr {args.lr} --r {args.r} --workers {args.workers}",
        "lora_r": args.r, "pairs": counts, "steps": summary.get("global_step"), "train_loss": summary.get("train_loss"),
        "reward_model": {"accuracy": summary.get("heldout_accuracy"), "margin": summary.get("heldout_margin"),
                         "pairs": summary.get("heldout_pairs"), "trl_eval_accuracy": summary.get("eval_accuracy")},
        "baselines": baselines, "seconds": {"baselines": baseline_s, "train_and_eval": train_s},
        "loss_history": summary.get("loss_history"), "run": str(outcome.run.run_dir),
    }
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "reward_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("steps", "reward_model", "baselines", "seconds")}, indent=1), flush=True)
    write_section(REPO / "docs" / "benchmarks.md", "reward_quality", _body(result))
    return 0


def _body(r: dict) -> str:
    b, m = r["baselines"], r["reward_model"]
    return f"""## Reward model quality: the embedded model's reward stage vs length and the base model

A reward stage (SmolLM2-135M-Instruct, LoRA r {r['lora_r']}, {r['steps']} steps of
8 pairs, 1 epoch = {r['pairs']['train'] // 8} steps) on {r['pairs']['train']} HH-shaped implicit-prompt pairs
built by `bench/reward_set.py`: harmful requests (refusal chosen) and benign requests on the same
topics (compliance chosen, the unneeded refusal rejected), length-matched templates, so that a
refusal is chosen in half the pairs and neither length nor wording separates the sides. Held out:
{r['pairs']['heldout']} pairs on 20 tasks never seen in training. The files are read as they ship
(`format: auto` -> `preference_implicit`).

| scorer (held-out pairs) | pairwise accuracy | mean margin |
|---|---|---|
| length (longer answer wins) | {b['length']['accuracy']:.3f} | - |
| base model, sum log p(answer) | {b['base_logp_sum']['accuracy']:.3f} | {b['base_logp_sum']['margin']:.2f} nats |
| base model, mean log p(answer) per token | {b['base_logp_mean']['accuracy']:.3f} | {b['base_logp_mean']['margin']:.3f} nats |
| **rayft reward stage** | **{m['accuracy']:.3f}** | {m['margin']:.3f} |

Train loss by step: {', '.join(f"{step} {loss:.3f}" for step, loss in r['loss_history'])}: it sits at
log 2 for the first ~25 steps (wording alone predicts nothing here, so the score head has nothing to
use until the LoRA weights represent the request's harm), then falls. A run stopped inside that
plateau looks as if the reward model cannot learn (docs/stages.md, "reward").
TRL's own evaluation of the stage on the same pairs gives {m['trl_eval_accuracy']:.3f} (it averages per-batch
accuracies, so the last, smaller batch weighs more). Wall time:
training + evaluation {r['seconds']['train_and_eval']:.0f} s, baselines {r['seconds']['baselines']:.0f} s, on
{r['machine']}, with the command:

    {r['command']}
"""


if __name__ == "__main__":
    raise SystemExit(main())
