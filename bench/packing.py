"""Packing vs padding: padding fraction and trained tokens/s of three ways to batch, one process.

LoRA SFT of the embedded SmolLM2-135M-Instruct on ../shared/data/lamini_docs.jsonl with TRL's
SFTTrainer (no Ray): (a) pad every batch to max_length, (b) dynamic padding (TRL's collator),
(c) rayft packing (PackedCollator, 4-D block-diagonal mask). Modes run interleaved over
--repeats rounds, a fresh model each run; medians. Real and computed tokens are counted by a
wrapper around the collator (not TRL's num_tokens, which is wrong for 4-D masks). Writes
bench/results/packing.json and the `packing` section of docs/benchmarks.md.

    RAYFT_HOME=... .venv/bin/python bench/packing.py [--repeats 2] [--steps 12]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "lamini_docs.jsonl"
MODEL = "builtin:smollm2-135m-instruct"
MAX_LENGTH = 256
BEGIN, END = "<!-- BEGIN packing -->", "<!-- END packing -->"
INTRO = ("# Benchmarks\n\nMeasured figures, each section written by the script it names "
         "(re-run the command to refresh it).\n")
MODES = {"pad_to_max_length": "(a) pad to max_length", "dynamic": "(b) dynamic padding", "packed": "(c) packing"}


class Counting:
    """Wraps a collator; records (real tokens of the rows in, computed tokens of the batch out)."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, rows):
        batch = self.inner(rows)
        self.batches.append((sum(len(r["input_ids"]) for r in rows), batch["input_ids"].numel()))
        return batch


def run_mode(mode: str, a, path: str, tokenizer, data: dict) -> dict:
    import torch
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from rayft.config import AdapterConfig, ModelConfig
    from rayft.data.packing import PackedCollator
    from rayft.models.adapters import apply_adapter
    from rayft.models.loader import load_causal_lm

    set_seed(a.seed)
    model = apply_adapter(load_causal_lm(path, ModelConfig(name=MODEL)), AdapterConfig())
    packed = mode == "packed"
    with tempfile.TemporaryDirectory(prefix="rayft-packing-") as out:
        args = SFTConfig(
            output_dir=out, learning_rate=a.lr, max_steps=a.steps, per_device_train_batch_size=a.batch_size,
            gradient_accumulation_steps=1, seed=a.seed, data_seed=a.seed, logging_steps=a.steps,
            eval_strategy="no", save_strategy="no", use_cpu=True, bf16=False, fp16=False, report_to="none",
            disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False, max_length=None,
            dataset_num_proc=None, pad_to_multiple_of=MAX_LENGTH if mode == "pad_to_max_length" else None,
            dataset_kwargs={"skip_prepare_dataset": True} if packed else None)
        collator = PackedCollator(tokenizer.pad_token_id, dtype=model.dtype) if packed else None
        trainer = SFTTrainer(model=model, args=args, train_dataset=data["packed" if packed else "unpacked"],
                             data_collator=collator, processing_class=tokenizer)
        counter = Counting(trainer.data_collator)
        trainer.data_collator = counter
        t0 = time.perf_counter()
        output = trainer.train()
        train_s = time.perf_counter() - t0
    # accelerate's loader collates one batch ahead: count only the batches the steps trained on
    used = counter.batches[: a.steps * args.gradient_accumulation_steps]
    real, computed = sum(r for r, _ in used), sum(c for _, c in used)
    result = {"real_tokens": real, "computed_tokens": computed, "padding_fraction": 1 - real / computed,
              "train_s": train_s, "trained_tokens_per_s": real / train_s, "computed_tokens_per_s": computed / train_s,
              "global_step": trainer.state.global_step, "batches_collated": len(counter.batches),
              "max_width": max(c for _, c in used) // a.batch_size, "train_loss": output.training_loss,
              "threads": torch.get_num_threads(), "loadavg_1m_after": os.getloadavg()[0]}
    del trainer, model, output
    gc.collect()
    return result


def summarise(runs: dict[str, list[dict]]) -> dict:
    keys = ("padding_fraction", "trained_tokens_per_s", "computed_tokens_per_s", "train_s")
    med = {m: {k: statistics.median(r[k] for r in rs) for k in keys} for m, rs in runs.items()}
    tps = {m: med[m]["trained_tokens_per_s"] for m in med}
    for m in med:
        med[m]["ratio_vs_a"] = tps[m] / tps["pad_to_max_length"]
        med[m]["ratio_vs_b"] = tps[m] / tps["dynamic"]
    return med


def write_docs(report: dict, path: Path) -> None:
    med, t, m, v = report["median"], report["targets"], report["machine"], report["versions"]
    rows = [f"| {label} | {med[k]['padding_fraction']:.1%} | {med[k]['trained_tokens_per_s']:,.1f} | "
            f"{med[k]['ratio_vs_a']:.2f} | {med[k]['ratio_vs_b']:.2f} | {med[k]['computed_tokens_per_s']:,.1f} |"
            for k, label in MODES.items()]
    ok = lambda x: "met" if x else "**NOT met**"  # noqa: E731
    per = "; ".join(f"vs (a) {x['vs_a']:.2f}, vs (b) {x['vs_b']:.2f}" for x in report["packed_ratios_per_round"])
    section = "\n".join([
        BEGIN, "## Packing vs padding", "",
        f"LoRA SFT (default adapter) of the embedded SmolLM2-135M-Instruct on `../shared/data/lamini_docs.jsonl` "
        f"(format qa, max_length {MAX_LENGTH}, {report['rows']['unpacked']} rows, {report['rows']['packed']} when "
        f"packed), TRL's SFTTrainer in one process (no Ray), {report['steps']} optimizer steps of batch size "
        f"{report['batch_size']}, {report['threads']} torch threads, fp32 on CPU with sdpa attention. "
        "Modes interleaved, a fresh model each run; medians of "
        f"{report['repeats']} rounds. Real and computed tokens are counted at the collator (only the "
        "batches trained on); padding fraction = 1 - real / computed; trained tokens/s = real tokens / wall "
        "time of `trainer.train()`.",
        "", "| mode | padding fraction | trained tokens/s | ratio vs (a) | ratio vs (b) | computed tokens/s |",
        "|---|---|---|---|---|---|", *rows, "",
        f"- packing padding fraction < 5%: {ok(t['padding_lt_5pct'])} ({med['packed']['padding_fraction']:.1%})",
        f"- packing >= 1.5x trained tokens/s of (a): {ok(t['ratio_vs_a_ge_1_5'])} ({med['packed']['ratio_vs_a']:.2f}x)",
        f"- packing >= 1.2x trained tokens/s of (b): {ok(t['ratio_vs_b_ge_1_2'])} ({med['packed']['ratio_vs_b']:.2f}x)",
        f"- packing ratios per round: {per}",
        f"- machine: {m['nproc']} CPU cores, `{m['platform']}`, Python {m['python']}",
        "- versions: " + ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "trl", "peft") if k in v),
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        "- raw figures: `bench/results/packing.json`",
        END,
    ])
    text = path.read_text() if path.exists() else INTRO
    if BEGIN in text and END in text:
        text = text.split(BEGIN, 1)[0] + section + text.split(BEGIN, 1)[1].split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kind, default in (("--repeats", int, 2), ("--steps", int, 12), ("--batch-size", int, 4),
                                ("--lr", float, 1e-3), ("--seed", int, 0), ("--threads", int, 2)):
        ap.add_argument(flag, type=kind, default=default)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "packing.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    a = ap.parse_args()
    if not DATA.is_file():
        return print(f"skipped: {DATA} is absent (this benchmark needs the shared lamini_docs data)", file=sys.stderr)
    import torch
    from rayft.config import DataConfig
    from rayft.data.build import prepare
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.train.rundir import versions

    torch.set_num_threads(a.threads)
    path = resolve_model(MODEL)
    tokenizer = load_tokenizer(path)
    data = {name: prepare(DataConfig(path=str(DATA), format="qa", max_length=MAX_LENGTH, eval_split=0,
                                     on_error="skip", packing=name == "packed"), tokenizer).train
            for name in ("unpacked", "packed")}
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    order = list(MODES)
    for i in range(a.repeats):
        for mode in order[i % 3:] + order[: i % 3]:  # rotate the order each round
            res = run_mode(mode, a, path, tokenizer, data)
            runs[mode].append(res)
            print(f"[{i + 1}/{a.repeats}] {mode}: padding {res['padding_fraction']:.1%}, "
                  f"{res['trained_tokens_per_s']:.1f} trained tok/s, {res['computed_tokens_per_s']:.1f} computed "
                  f"tok/s, train {res['train_s']:.1f} s, load {res['loadavg_1m_after']:.1f}", flush=True)
    med = summarise(runs)
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "RAYFT_HOME=... " + shlex.join([exe, os.path.relpath(Path(__file__).resolve(), ROOT),
                                                   *sys.argv[1:]]),
        "machine": {"nproc": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version()},
        "versions": versions(), "data": str(DATA), "model": MODEL, "max_length": MAX_LENGTH,
        "rows": {k: len(v) for k, v in data.items()},
        **{k: getattr(a, k) for k in ("steps", "batch_size", "lr", "seed", "threads", "repeats")},
        "targets": {"padding_lt_5pct": med["packed"]["padding_fraction"] < 0.05,
                    "ratio_vs_a_ge_1_5": med["packed"]["ratio_vs_a"] >= 1.5,
                    "ratio_vs_b_ge_1_2": med["packed"]["ratio_vs_b"] >= 1.2},
        "packed_ratios_per_round": [
            {"vs_a": p["trained_tokens_per_s"] / x["trained_tokens_per_s"],
             "vs_b": p["trained_tokens_per_s"] / d["trained_tokens_per_s"]}
            for p, x, d in zip(runs["packed"], runs["pad_to_max_length"], runs["dynamic"])],
        "median": med, "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    write_docs(report, a.docs)
    print(json.dumps({k: report[k] for k in ("targets", "packed_ratios_per_round", "median", "rows")}, indent=2))


if __name__ == "__main__":
    main()
