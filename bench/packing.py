"""Packing vs padding: padding fraction and trained tokens/s of three ways to batch, one process.

LoRA SFT of the embedded SmolLM2-135M-Instruct on ../shared/data/lamini_docs.jsonl, TRL's SFTTrainer
(no Ray): (a) pad to max_length, (b) dynamic padding, (c) rayft packing (PackedCollator, 4-D mask);
interleaved rounds, a fresh model each run, medians. Tokens are counted at the collator (TRL's
num_tokens is wrong for 4-D masks). Writes bench/results/packing.json and docs/benchmarks.md's
`packing` section:  RAYFT_HOME=... .venv/bin/python bench/packing.py [--repeats 2] [--steps 12]
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
INTRO = "# Benchmarks\n\nMeasured figures, each section written by the script it names (re-run it to refresh).\n"
TARGETS = [("padding fraction < 5%", "padding_lt_5pct", "padding_fraction", "{:.1%}"),
           (">= 1.5x trained tokens/s of (a)", "ratio_vs_a_ge_1_5", "ratio_vs_a", "{:.2f}x"),
           (">= 1.2x trained tokens/s of (b)", "ratio_vs_b_ge_1_2", "ratio_vs_b", "{:.2f}x")]
MODES = {"pad_to_max_length": "(a) pad to max_length", "dynamic": "(b) dynamic padding", "packed": "(c) packing"}


class Counting:
    """Wraps a collator; records (real tokens of the rows in, computed tokens of the batch out)."""
    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, rows):
        batch = self.inner(rows)
        self.batches.append((sum(len(r["input_ids"]) for r in rows), batch["input_ids"].numel()))
        return batch


def cpu_now() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) so far."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), time.process_time()


def run_mode(mode: str, a, path: str, tokenizer, data: dict) -> dict:
    import torch
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer
    from rayft.schema.sections import AdapterConfig, ModelConfig
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
        trainer.data_collator = counter = Counting(trainer.data_collator)
        (m0, p0), t0 = cpu_now(), time.perf_counter()
        output = trainer.train()
        train_s, (m1, p1) = time.perf_counter() - t0, cpu_now()
    # accelerate's loader collates one batch ahead: count only the batches the steps trained on
    used = counter.batches[: a.steps * args.gradient_accumulation_steps]
    real, computed = sum(r for r, _ in used), sum(c for _, c in used)
    result = {"real_tokens": real, "computed_tokens": computed, "padding_fraction": 1 - real / computed,
              "train_s": train_s, "trained_tokens_per_s": real / train_s, "computed_tokens_per_s": computed / train_s,
              "global_step": trainer.state.global_step, "batches_collated": len(counter.batches),
              "max_width": max(c for _, c in used) // a.batch_size, "train_loss": output.training_loss,
              "cpu_s": p1 - p0, "trained_tokens_per_cpu_s": real / (p1 - p0), "threads": torch.get_num_threads(),
              # share of the machine's CPU time that other processes used during train(): the noise
              "others_cpu_share": max(0.0, (m1 - m0) - (p1 - p0)) / (train_s * len(os.sched_getaffinity(0)))}
    del trainer, model, output
    gc.collect()
    return result


def summarise(runs: dict[str, list[dict]]) -> dict:
    keys = ("padding_fraction", "trained_tokens_per_s", "computed_tokens_per_s", "train_s", "trained_tokens_per_cpu_s")
    med = {m: {k: statistics.median(r[k] for r in rs) for k in keys} for m, rs in runs.items()}
    for m in med:
        for key, pre in (("trained_tokens_per_s", ""), ("trained_tokens_per_cpu_s", "cpu_")):
            med[m][pre + "ratio_vs_a"] = med[m][key] / med["pad_to_max_length"][key]
            med[m][pre + "ratio_vs_b"] = med[m][key] / med["dynamic"][key]
    return med


def write_docs(report: dict, path: Path) -> None:
    med, t, m, v = report["median"], report["targets"], report["machine"], report["versions"]
    rows = [f"| {label} | {med[k]['padding_fraction']:.1%} | {med[k]['trained_tokens_per_s']:,.1f} | "
            f"{med[k]['ratio_vs_a']:.2f} | {med[k]['ratio_vs_b']:.2f} | {med[k]['computed_tokens_per_s']:,.1f} |"
            for k, label in MODES.items()]
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
        *(f"- packing {what}: {'met' if t[key] else '**NOT met**'} ({fmt.format(med['packed'][val])})"
          for what, key, val, fmt in TARGETS),
        f"- packing ratios per round: {per}",
        "- per CPU-second of this process (less sensitive to other load): trained tokens/CPU-s " + ", ".join(
            f"{lbl[:3]} {med[k]['trained_tokens_per_cpu_s']:.1f}" for k, lbl in MODES.items())
        + f"; packing vs (a) {med['packed']['cpu_ratio_vs_a']:.2f}x, vs (b) {med['packed']['cpu_ratio_vs_b']:.2f}x",
        "- share of the machine's CPU used by other processes during each run: " + ", ".join(
            f"{lbl[:3]} " + "/".join(f"{r['others_cpu_share']:.0%}" for r in report["runs"][k])
            for k, lbl in MODES.items()),
        f"- machine: {m['nproc']} CPU cores, `{m['platform']}`, Python {m['python']}",
        "- versions: " + ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "trl", "peft") if k in v),
        f"- date: {report['date']}", f"- command: `{report['command']}`", "- raw figures: `bench/results/packing.json`",
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
    from rayft.schema.sections import DataConfig
    from rayft.data.build import prepare
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.records.rundir import versions
    torch.set_num_threads(a.threads)
    tokenizer = load_tokenizer(path := resolve_model(MODEL))
    data = {name: prepare(DataConfig(path=str(DATA), format="qa", max_length=MAX_LENGTH, eval_split=0,
                                     on_error="skip", packing=name == "packed"), tokenizer).train
            for name in ("unpacked", "packed")}
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for i in range(a.repeats):
        for mode in list(MODES)[i % 3:] + list(MODES)[: i % 3]:  # rotate the order each round
            runs[mode].append(res := run_mode(mode, a, path, tokenizer, data))
            print(f"[{i + 1}/{a.repeats}] {mode}: padding {res['padding_fraction']:.1%}, "
                  f"{res['trained_tokens_per_s']:.1f} trained tok/s, {res['computed_tokens_per_s']:.1f} computed "
                  f"tok/s, train {res['train_s']:.1f} s, others' CPU {res['others_cpu_share']:.0%}", flush=True)
    med = summarise(runs)
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "RAYFT_HOME=... " + shlex.join([exe, "bench/packing.py", *sys.argv[1:]]),
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
