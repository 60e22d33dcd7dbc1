"""Held-out quality of the embedded model on the Lamini docs: base vs SFT vs SFT -> DPO.

The three steps of jobs/configs/dpo_lamini.yaml, run with the repository's own configs:

1. LoRA SFT of SmolLM2-135M-Instruct (jobs/configs/sft_lamini.yaml, 2 Ray workers);
2. preference pairs from the SFT model's answers (`rayft data preference`, training rows only, so
   the held-out questions stay unseen): reference answer = chosen, SFT answer = rejected;
3. DPO from the SFT adapter on those pairs (jobs/configs/dpo_lamini.yaml);

then `rayft eval` of base, SFT and DPO on the same held-out Lamini questions (the SFT config's
seeded 10% split): ROUGE-L, exact match, BLEU, answer loss/perplexity, greedy decoding. The DPO
stage's own held-out pairs give its reward accuracy and margin. On a 2-core CPU the full-size
run takes about an hour; `--sft-steps`, `--pairs`, `--dpo-steps` reduce it (the figures say what
was run). Writes bench/results/lamini_alignment.json and its section of docs/benchmarks.md.

    RAYFT_HOME=... .venv/bin/python bench/lamini_alignment.py [--sft-steps N] [--pairs 400]
        [--dpo-steps N] [--eval-examples 50] [--max-new-tokens 96] [--keep DIR]
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

SFT_CONFIG = REPO / "jobs" / "configs" / "sft_lamini.yaml"
DPO_CONFIG = REPO / "jobs" / "configs" / "dpo_lamini.yaml"
DATA = REPO.parent / "shared" / "data" / "lamini_docs.jsonl"


def _summary(stage: Path) -> dict:
    return json.loads((stage / "summary.json").read_text())


def _steps(flag: int | None) -> list[str]:
    return [f"training.max_steps={flag}"] if flag else []


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sft-steps", type=int, help="cap the SFT stage (default: one epoch)")
    parser.add_argument("--pairs", type=int, default=400, help="training rows turned into preference pairs")
    parser.add_argument("--dpo-steps", type=int, help="cap the DPO stage (default: one epoch over the pairs)")
    parser.add_argument("--eval-examples", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--keep", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent", flush=True)
        return 0
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ["RAY_ADDRESS"] = "local"
    import ray

    from rayft.config_io import load_config
    from rayft.data.pair_builder import build_preference_pairs
    from rayft.eval.compare import evaluate_config
    from rayft.train.launch import run_pipeline

    storage = Path(args.keep or tempfile.mkdtemp(prefix="rayft-bench-lamini-")).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    common = [f"storage.path={storage}", "eval.enabled=false"]
    ray.init(num_cpus=2, logging_level="ERROR")
    t0 = time.time()
    sft_stage = storage / "sft-lamini" / "sft"
    if not (sft_stage / "adapter" / "adapter_config.json").is_file():
        run_pipeline(load_config(str(SFT_CONFIG), [*common, *_steps(args.sft_steps)]))
    sft_s = time.time() - t0

    t1 = time.time()
    pairs_file = storage / "lamini_pairs.jsonl"
    sft_loaded = load_config(str(SFT_CONFIG), [*common, f"eval.max_new_tokens={args.max_new_tokens}"])
    pair_stats = build_preference_pairs(sft_loaded, pairs_file, adapter=str(sft_stage / "adapter"),
                                        limit=args.pairs, split="train")
    pairs_s = time.time() - t1

    t2 = time.time()
    dpo_stage = storage / "dpo-lamini" / "dpo"
    run_pipeline(load_config(str(DPO_CONFIG), [*common, f"adapter.init_from={sft_stage / 'adapter'}",
                                               f"data.path={pairs_file}", *_steps(args.dpo_steps)]))
    dpo_s = time.time() - t2
    ray.shutdown()

    t3 = time.time()
    eval_loaded = load_config(str(SFT_CONFIG), [
        *common, f"eval.models={{sft: '{sft_stage}', dpo: '{dpo_stage}'}}",
        f"eval.num_examples={args.eval_examples}", f"eval.max_new_tokens={args.max_new_tokens}"])
    evaluate_config(eval_loaded, storage / "eval")
    eval_s = time.time() - t3
    metrics = json.loads((storage / "eval" / "eval.json").read_text())["metrics"]

    sft, dpo = _summary(sft_stage), _summary(dpo_stage)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
        "command": "RAYFT_HOME=/tmp/rh .venv/bin/python bench/lamini_alignment.py"
                   + (f" --sft-steps {args.sft_steps}" if args.sft_steps else "") + f" --pairs {args.pairs}"
                   + (f" --dpo-steps {args.dpo_steps}" if args.dpo_steps else "")
                   + f" --eval-examples {args.eval_examples} --max-new-tokens {args.max_new_tokens}",
        "sft_steps": sft.get("global_step"), "dpo_steps": dpo.get("global_step"), "pairs": pair_stats,
        "dpo_eval": {k: dpo.get(k) for k in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_loss")},
        "metrics": metrics, "seconds": {"sft": sft_s, "pairs": pairs_s, "dpo": dpo_s, "eval": eval_s},
        "runs": str(storage),
    }
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "lamini_alignment.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("sft_steps", "dpo_steps", "dpo_eval", "seconds")}), flush=True)
    write_section(REPO / "docs" / "benchmarks.md", "lamini_alignment", _body(result))
    return 0


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _body(r: dict) -> str:
    rows = "\n".join(f"| {m['model']} | {m['n']} | {_fmt(m['rouge_l'])} | {_fmt(m['exact_match'])} | "
                     f"{_fmt(m['bleu'])} | {_fmt(m['loss'])} | {_fmt(m['perplexity'], 2)} | "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(m['tags'].items())) or 'none'} |"
                     for m in r["metrics"])
    p, d, s = r["pairs"], r["dpo_eval"], r["seconds"]
    return f"""## Alignment quality on the Lamini docs: base vs SFT vs SFT -> DPO (embedded model)

SmolLM2-135M-Instruct, LoRA r 16 (`jobs/configs/sft_lamini.yaml`, then `jobs/configs/dpo_lamini.yaml`),
2 Ray workers on CPU. SFT ran {r['sft_steps']} optimizer steps (batch 4 per worker). Preference pairs:
{p['examples']} training-split questions answered greedily by the SFT model, {p['pairs']} pairs kept
(reference = chosen, SFT answer = rejected; {p['skipped_same_answer']} identical and
{p['skipped_empty_answer']} empty answers skipped). DPO (beta 0.1, sigmoid loss) ran {r['dpo_steps']}
steps from the SFT adapter; on its own held-out pairs: reward accuracy {_fmt(d['eval_rewards/accuracies'])},
reward margin {_fmt(d['eval_rewards/margins'])}.

Held-out: the first {r['metrics'][0]['n']} questions of the SFT config's seeded 10% split, never
trained on by either stage; greedy decoding. Loss / perplexity: teacher-forced on the reference
answer tokens only.

| model | n | ROUGE-L | exact match | BLEU | answer loss | perplexity | error tags |
|---|---|---|---|---|---|---|---|
{rows}

Wall time: SFT {s['sft']:.0f} s, pairs {s['pairs']:.0f} s, DPO {s['dpo']:.0f} s, eval {s['eval']:.0f} s,
on {r['machine']}, with the command:

    {r['command']}
"""


if __name__ == "__main__":
    raise SystemExit(main())
