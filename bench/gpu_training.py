"""GPU training throughput: a ZeRO-3 + bf16 full fine-tune and a QLoRA run of a ~1B-parameter
random-weight Llama: tokens/s, peak GPU memory per worker and model FLOPs utilisation (MFU).

Each method is one real `rayft` SFT run (rayft.train.launch.run_pipeline) on a local Ray with one
worker per GPU. The model has TinyLlama-1.1B's shape (hidden 2048, MLP 5632, 22 layers, 32 heads,
4 KV heads, vocab 32000) with random weights, built once with `save_pretrained` (safetensors, bf16)
into $RAYFT_HOME/bench/gpu_training-1b/ together with a word-level tokenizer made offline (one token
per word `w0`..`w31995`), so nothing is downloaded. The training rows are random words, exactly
`--max-length` tokens each (EOS included), so every batch is full and no token is padding.
Figures, from the stage's summary.json: tokens/s after the first logged step (`steady_tokens_per_s`:
leaves out one-off warm-up) and over the whole run (`tokens_per_s`), each worker's
`torch.cuda.max_memory_allocated` (`peak_gpu_mem_mib_per_worker`), and MFU = training FLOPs per
token x steady tokens/s / (peak dense bf16 FLOP/s x GPUs), FLOPs from rayft.compute.flops (full:
6N + 12·L·d·T per token; LoRA / QLoRA: 4N + 12·L·d·T + 6 per adapter weight, since the frozen
base runs forward and backward through its activations but forms no weight gradients).
Writes bench/results/gpu_training.json and the `gpu_training` section of docs/benchmarks.md.

    RAYFT_HOME=... python bench/gpu_training.py [--model-size 1b|tiny] [--methods zero3-bf16-full,qlora-bf16]
        [--steps 30] [--batch-size 8] [--max-length 2048] [--num-workers N] [--peak-tflops T]
        [--docs docs/benchmarks.md] [--results bench/results/gpu_training.json]

Without a GPU it runs as a CPU smoke check (fp32 instead of bf16, MFU n/a): `--model-size tiny
--steps 2` proves the script end to end in about a minute (tests/test_gpu_training_bench.py does so,
writing to temporary --docs / --results). Its figures are not GPU measurements.

How to run it on a GPU machine without network (one H100 / H200 with torch + CUDA, transformers,
peft, accelerate, but not ray, trl, deepspeed, bitsandbytes): build the package bundle here with
../shared/tools/gpu_bundle.py (read its docstring; the bundle, under 64 MiB, travels beside the
project), then there install it and run:

    echo /.gpu/ >> .git/info/exclude
    python3 ../shared/tools/gpu_bundle.py --out .gpu -- "ray[train,tune,serve]==2.60.0" trl==1.16.0 \\
        peft==0.21.2 accelerate==1.15.0 datasets==5.2.0 bitsandbytes==0.50.2 pydantic==2.14.3
    # (deepspeed 0.19.8 travels as an sdist: the script's default --sdist)
    # on the GPU machine, in the project root (with .gpu/ copied beside it):
    eval $(bash .gpu/install.sh)
    RAYFT_HOME=/tmp/rayft-home python bench/gpu_training.py

Run with the default --docs / --results there (the command in the docs section stays the plain one),
then bring back docs/benchmarks.md and bench/results/gpu_training.json (with this project's device tool:
`... && cp docs/benchmarks.md bench/results/gpu_training.json $OUT/`). The default run (two methods x
30 steps of 8 x 2048 tokens, plus building the 1.1B model once, about 2 GiB under RAYFT_HOME) is
expected to take a few minutes on one H100/H200; it has not been run on a GPU yet. If a package is
missing there, add it to the bundle's command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(1, str(REPO))  # rayft from this checkout when it is not installed (the GPU machine)
from docs_section import write_section  # noqa: E402

VOCAB = 32000
SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
SIZES = {  # LlamaConfig shapes; "1b" is TinyLlama-1.1B's
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}
ZERO3 = ["training.strategy=deepspeed", "training.deepspeed.stage=3"]
# name -> (adapter.type, method for the FLOPs count, overrides). QLoRA: LoRA on a 4-bit NF4 base, DDP.
METHODS = {
    "zero3-bf16-full": ("full", "full", ZERO3),
    "qlora-bf16": ("lora", "qlora", ["model.quantization=4bit"]),
}
LORA_R = 16  # rayft's default adapter.r, used by the qlora run and its FLOPs count
READY = ".ready"


def build_model(size: str, target: Path, on_gpu: bool) -> Path:
    """A random-weight Llama of `size` plus a word-level tokenizer, saved once into `target`."""
    if (target / READY).is_file():
        return target
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from rayft.core.publish import staged_folder

    with staged_folder(target) as staging:
        vocab = {tok: i for i, tok in enumerate(SPECIALS)}
        vocab.update({f"w{i}": len(SPECIALS) + i for i in range(VOCAB - len(SPECIALS))})
        word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>", bos_token="<s>",
                                            eos_token="</s>", pad_token="<pad>")
        config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, tie_word_embeddings=False,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **SIZES[size])
        torch.manual_seed(0)
        # bf16 on the GPU (initialising 1.1B weights there takes a second); the tiny CPU model in fp32.
        with torch.device("cuda" if on_gpu else "cpu"):
            model = LlamaForCausalLM(config).to(torch.bfloat16 if on_gpu else torch.float32)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / READY).write_text("ok\n")
    return target


def write_rows(path: Path, rows: int, max_length: int, seed: int = 0) -> Path:
    """`rows` lines of random words, each exactly max_length tokens once EOS is appended."""
    rng = random.Random(seed)
    words = VOCAB - len(SPECIALS)
    with path.open("w") as f:
        for _ in range(rows):
            f.write(json.dumps({"text": " ".join(f"w{rng.randrange(words)}" for _ in range(max_length - 1))}) + "\n")
    return path


def run_method(name: str, args: argparse.Namespace, model_dir: Path, data: Path, storage: Path,
               on_gpu: bool) -> dict:
    from rayft.config.load import load_pipeline
    from rayft.train.launch import run_pipeline

    adapter, _, extra = METHODS[name]
    overrides = [f"model.name={model_dir}", f"adapter.type={adapter}", f"adapter.r={LORA_R}",
                 f"data.path={data}", "data.format=text", "data.template=none",
                 f"data.max_length={args.max_length}", "data.eval_split=0",
                 f"training.max_steps={args.steps}", f"training.batch_size={args.batch_size}", "training.lr=1e-5",
                 "training.logging_steps=1", f"training.precision={'bf16' if on_gpu else 'fp32'}",
                 f"scaling.num_workers={args.num_workers}", f"scaling.use_gpu={str(on_gpu).lower()}",
                 "eval.enabled=false", "tracking.tensorboard=false", f"storage.path={storage}",
                 f"run_name={name}", *extra]
    t0 = time.time()
    run_pipeline(load_pipeline(None, overrides))
    summary = json.loads((storage / name / "sft" / "summary.json").read_text())
    return {"method": name, "adapter": adapter, "strategy_in_effect": summary.get("strategy"),
            "precision": "bf16" if on_gpu else "fp32", "global_step": summary.get("global_step"),
            "num_tokens": summary.get("num_tokens"), "train_runtime_s": summary.get("train_runtime_s"),
            "tokens_per_s": summary.get("tokens_per_s"), "steady_tokens_per_s": summary.get("steady_tokens_per_s"),
            "peak_gpu_mem_mib_per_worker": summary.get("peak_gpu_mem_mib_per_worker"),
            "peak_rss_mib_per_worker": summary.get("peak_rss_mib_per_worker"),
            "train_loss": summary.get("train_loss"), "wall_s": round(time.time() - t0, 1), "overrides": extra}


def add_flops(row: dict, shape, max_length: int, peak: float | None, devices: int) -> dict:
    """FLOPs per token, achieved TFLOP/s per device and MFU (None without a known peak)."""
    from rayft.compute.flops import model_flops_utilisation, training_flops_per_token

    flops = training_flops_per_token(shape, max_length, METHODS[row["method"]][1], LORA_R)
    tps = row["steady_tokens_per_s"] or row["tokens_per_s"] or 0.0
    row["flops_per_token"] = flops
    row["achieved_tflops_per_device"] = flops * tps / devices / 1e12
    row["mfu"] = model_flops_utilisation(flops, tps, peak, devices) if peak else None
    return row


def environment(on_gpu: bool) -> dict:
    from importlib import metadata

    import torch

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "deepspeed", "bitsandbytes", "ray"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = torch.cuda.get_device_name(0) if on_gpu else f"{platform.machine()}, {os.cpu_count()} CPU cores"
    return {"device": device, "cuda": torch.version.cuda if on_gpu else None, "python": platform.python_version(),
            "versions": versions}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per worker per step")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--num-workers", type=int, default=None, help="default: one per GPU (1 on CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense bf16 TFLOP/s of one GPU (default: from its name, rayft.compute.flops)")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "gpu_training.json")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"--methods: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(METHODS)}")
    args.methods = methods
    if args.steps < 2:
        parser.error("--steps: at least 2 (tokens/s is measured after the first step)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import ray
    import torch

    from rayft.core.paths import rayft_home
    from rayft.compute.flops import peak_flops
    from rayft.compute.memory import ModelShape

    on_gpu = torch.cuda.is_available()
    args.num_workers = args.num_workers or (torch.cuda.device_count() if on_gpu else 1)
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    # Ray workers import rayft too: from this checkout when it is not installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = environment(on_gpu)
    peak = (args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(env["device"])) if on_gpu else None

    cache = rayft_home() / "bench" / f"gpu_training-{args.model_size}"
    cache.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model_dir = build_model(args.model_size, cache, on_gpu)
    print(f"[gpu_training] model {model_dir} ready in {time.time() - t0:.0f} s", flush=True)
    from transformers import AutoConfig

    shape = ModelShape.from_hf_config(AutoConfig.from_pretrained(model_dir), f"random Llama ({args.model_size})")

    # "local": a fresh instance, never a cluster someone else started on this machine with `ray start`.
    ray.init(address="local", logging_level="WARNING")
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="rayft-bench-gpu-") as tmp:
            data = write_rows(Path(tmp) / "rows.jsonl", args.steps * args.batch_size * args.num_workers,
                              args.max_length)
            for name in args.methods:
                row = run_method(name, args, model_dir, data, Path(tmp) / "runs", on_gpu)
                rows.append(add_flops(row, shape, args.max_length, peak, args.num_workers))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
    result = {"date": time.strftime("%Y-%m-%d"), "gpu": on_gpu, **env, "peak_tflops_per_device": peak / 1e12 if peak
              else None, "model_size": args.model_size, "params": shape.params(), "layers": shape.layers,
              "hidden": shape.hidden, "vocab": shape.vocab, "steps": args.steps, "batch_size": args.batch_size,
              "max_length": args.max_length, "num_workers": args.num_workers, "lora_r": LORA_R,
              "command": command_line(argv if argv is not None else sys.argv[1:]),
              "results_file": _shown(args.results), "rows": rows}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    write_section(args.docs, "gpu_training", render(result))
    print(json.dumps(result, indent=2))


def command_line(argv: list[str]) -> str:
    return " ".join(["RAYFT_HOME=... python bench/gpu_training.py", *argv])


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _mib(values: list | None) -> str:
    return " / ".join(f"{v:,.0f}" for v in values) if values else "n/a"


def render(result: dict) -> str:
    where = (f"{result['num_workers']} x {result['device']} (CUDA {result['cuda']}), one Ray worker per GPU"
             if result["gpu"] else f"No GPU: a CPU smoke run ({result['device']}, {result['num_workers']} Ray "
             "worker(s), fp32) that checks the script end to end; its figures are not GPU measurements")
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v)
    peak = (f"{result['peak_tflops_per_device']:.0f} TFLOP/s dense bf16 per GPU" if result["peak_tflops_per_device"]
            else "unknown: MFU is n/a without a GPU, or for a GPU not in rayft.compute.flops.PEAK_BF16_TFLOPS "
            "(pass --peak-tflops)")
    params = result["params"]
    size = f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.1f}M"
    lines = [
        "## GPU training: ZeRO-3 + bf16 full fine-tune vs QLoRA (~1B Llama, random weights)",
        "",
        f"A random-weight Llama of {size} parameters ({result['layers']} layers, hidden "
        f"{result['hidden']}, vocab {result['vocab']}; `--model-size {result['model_size']}`), SFT on rows of "
        f"exactly {result['max_length']} tokens, batch {result['batch_size']} per worker, {result['steps']} steps, "
        f"AdamW. {where}. Python {result['python']}; {versions}; {result['date']}.",
        "",
        "| method | strategy run | precision | tokens/s (after step 1) | tokens/s (whole run) | "
        "peak GPU memory per worker (MiB) | TFLOP/s per GPU | MFU | train loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        steady = f"{r['steady_tokens_per_s']:,.0f}" if r.get("steady_tokens_per_s") else "-"
        whole = f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        tflops = f"{r['achieved_tflops_per_device']:.1f}" if result["gpu"] else "n/a"
        lines.append(f"| {r['method']} | {r['strategy_in_effect']} | {r['precision']} | {steady} | {whole} | "
                     f"{_mib(r.get('peak_gpu_mem_mib_per_worker'))} | {tflops} | {mfu} | {r['train_loss']:.3f} |")
    lines += [
        "",
        "Tokens/s after step 1 leaves out one-off warm-up (CUDA kernel selection, allocator growth, DeepSpeed "
        "set-up); it is the figure MFU uses. Peak GPU memory = each worker's `torch.cuda.max_memory_allocated` "
        "(summary.json `peak_gpu_mem_mib_per_worker`; the allocator's reserve and the CUDA context come on top). "
        f"MFU = model FLOPs per token x tokens/s / the GPUs' peak; peak: {peak}. FLOPs per token "
        "(rayft/compute/flops.py, the PaLM-paper estimate, matmuls only): full fine-tune 6N + 12·L·d·T, with N the "
        "weights used in matmuls (blocks' linear layers and the LM head), L layers, d the attention width and T "
        "the sequence length; LoRA / QLoRA 4N + 12·L·d·T + 6 per adapter weight, because the frozen base still "
        "runs forward (2N) and passes gradients back through its activations (2N) but forms no weight gradients. "
        "QLoRA's 4-bit de-quantization is extra work that MFU does not count, so expect a lower MFU from QLoRA. "
        + ("With one GPU, ZeRO-3 has nothing to shard across: it measures the strategy's overhead, not its savings. "
           if result["num_workers"] == 1 else "")
        + f"Raw figures: `{result['results_file']}`.",
        "",
        f"Command: `{result['command']}` (on a GPU machine without network: see the script's docstring for the "
        "package bundle).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
