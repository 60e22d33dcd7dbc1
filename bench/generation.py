"""Generation at scale: rayft's hf engine (HF generate, this process) vs its vllm engine (vLLM
engine actors on Ray, .venv-vllm), on the embedded model, in one run, the same machine and session:

(a) evaluation: greedy answers (64 new tokens) of the base and a tuned LoRA adapter to the >= 400
    held-out Lamini rows (sft_lamini.yaml with eval_split 0.3; the adapter: --sft-steps of LoRA SFT
    on the other rows), and how far the two engines' answers and metrics agree;
(b) the pairs of jobs/configs/dpo_lamini.yaml: 400 training questions, 4 samples + the greedy
    answer each, ROUGE-L ranked (`rayft data preference`'s code);
(c) `rayft data generate`: the embedded model as teacher answers 500 Lamini questions (128 tokens).

Wall time (vLLM's engine start-up included, and shown apart) and output tokens/s per engine.
Writes bench/results/generation.json and the `generation` section of docs/benchmarks.md.

    RAYFT_HOME=/tmp/rh .venv/bin/python bench/generation.py            # ~55 min on 2 cores
    .venv/bin/python bench/generation.py --quick                         # 40 / 20 / 20 rows: a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from docs_section import write_section  # noqa: E402

LAMINI = REPO.parent / "shared" / "data" / "lamini_docs.jsonl"
ENGINE = ["generation.cpus_per_engine=2"]  # the whole 2-core machine, as HF generate gets it


LEGS: dict = {}  # finished legs of this bench in --work (legs.json): a rerun with --reuse skips them
LEGS_FILE: list[Path] = []


def keep_leg(name: str, figures: dict) -> None:
    LEGS[name] = figures
    if LEGS_FILE:
        LEGS_FILE[0].write_text(json.dumps(LEGS, indent=1))


def train_adapter(work: Path, steps: int) -> Path:
    """A LoRA SFT of the embedded model on Lamini rows outside the held-out split (sft_lamini.yaml's
    adapter settings, answer-only loss, batch 8), in this process: `rayft train` would add its
    held-out evaluation of 418 rows, minutes this bench does not need."""
    adapter = work / f"sft-{steps}"
    if adapter.is_dir():
        return adapter
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rayft.config.load import load_pipeline
    from rayft.eval.compare import held_out
    from rayft.models.loader import load_tokenizer, resolve_model

    loaded = load_pipeline(REPO / "jobs/configs/sft_lamini.yaml", ["data.eval_split=0.3", "eval.num_examples=100000"])
    path = resolve_model(loaded.pipeline.model.name)
    tokenizer = load_tokenizer(path, False, loaded.pipeline.model)
    held = set(held_out(loaded, tokenizer).generated[1])
    rows = [json.loads(line) for line in LAMINI.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["answer"].strip() and r["answer"] not in held]
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    for step in range(steps):
        batch = [rows[(step * 8 + k) % len(rows)] for k in range(8)]
        losses = []
        for row in batch:
            prompt = tokenizer(row["question"], add_special_tokens=False).input_ids
            answer = tokenizer(" " + row["answer"] + tokenizer.eos_token, add_special_tokens=False).input_ids
            ids = torch.tensor([(prompt + answer)[:256]])
            labels = ids.clone()
            labels[:, :len(prompt)] = -100
            loss = model(input_ids=ids, labels=labels).loss / len(batch)
            loss.backward()
            losses.append(loss.item() * len(batch))
        optimizer.step()
        optimizer.zero_grad()
        print(f"bench: sft step {step + 1}/{steps} loss {sum(losses) / len(losses):.3f}", flush=True)
    model.save_pretrained(adapter)
    return adapter


def evaluation(adapter: Path, rows: int | None) -> dict:
    """(a): both engines answer the held-out rows with the base and the adapter."""
    from rayft.config.load import load_pipeline
    from rayft.eval.compare import held_out
    from rayft.generation.hf import generate
    from rayft.generation.vllm_pool import answer_models
    from rayft.metrics.text import score_pairs
    from rayft.models.adapters import load_for_inference
    from rayft.models.loader import load_tokenizer, resolve_model

    loaded = load_pipeline(REPO / "jobs/configs/sft_lamini.yaml",
                           ["data.eval_split=0.3", "eval.num_examples=100000", "eval.max_new_tokens=64", *ENGINE])
    cfg = loaded.pipeline
    path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(path, False, cfg.model)
    prompts, references = held_out(loaded, tokenizer).generated
    prompts, references = prompts[:rows], references[:rows]
    jobs = [("base", path, None), ("tuned", path, adapter)]
    out: dict = {"rows": len(prompts), "engines": {}}
    answers: dict = {}
    t0 = time.time()
    hf = {}
    for label, _, folder in jobs:
        model = load_for_inference(path, cfg.model, folder)
        hf[label] = generate(model, tokenizer, prompts, max_new_tokens=64, batch_size=cfg.eval.batch_size)
    out["engines"]["hf"] = _figures(time.time() - t0, 0.0, hf)
    answers["hf"] = hf
    t0 = time.time()
    written, _, notes = answer_models(jobs, cfg.model, cfg.generation, tokenizer, prompts, max_new_tokens=64)
    vllm = {label: [g[0] for g in gens] for label, gens in written.items()}
    start = float(re.search(r"([\d.]+) s to start", notes[0]).group(1))
    out["engines"]["vllm"] = _figures(time.time() - t0, start, vllm)
    answers["vllm"] = vllm
    for label, _, _ in jobs:
        scores = {e: score_pairs([g.text for g in answers[e][label]], references) for e in answers}
        same = sum(a.text == b.text for a, b in zip(answers["hf"][label], answers["vllm"][label]))
        out[label] = {"agree_exactly": same, "of": len(prompts),
                      **{e: {"exact_match": s["exact_match"], "rouge_l": round(s["rouge_l"], 4),
                             "intervals": s.get("intervals", {})} for e, s in scores.items()}}
    return out


def _figures(wall: float, start: float, gens: dict) -> dict:
    tokens = sum(g.new_tokens for per in gens.values() for g in per)
    return {"wall_s": round(wall, 1), "start_s": start, "output_tokens": tokens, "tok_s": round(tokens / wall, 1),
            "tok_s_after_start": round(tokens / max(wall - start, 1e-9), 1)}


def pairs(adapter: Path, work: Path, limit: int) -> dict:
    """(b): dpo_lamini.yaml's pairs with each engine."""
    from rayft.config.load import load_pipeline
    from rayft.datatools.pair_builder import build_preference_pairs

    out = {}
    for engine in ("hf", "vllm"):
        if (cached := LEGS.get(f"pairs-{engine}-{limit}")) is not None:
            out[engine] = cached
            continue
        loaded = load_pipeline(REPO / "jobs/configs/dpo_lamini.yaml", [f"generation.engine={engine}", *ENGINE,
                                                                       f"adapter.init_from={adapter}"])
        t0 = time.time()
        stats = build_preference_pairs(loaded, work / f"pairs-{engine}.jsonl", str(adapter), limit=limit,
                                       samples=4, score="rouge_l", min_gap=0.15, greedy=True, seed=0)
        wall = time.time() - t0
        out[engine] = {"wall_s": round(wall, 1), "pairs": stats["pairs"], "answers": stats["examples"] * 5,
                       "output_tokens": stats["output_tokens"], "tok_s": round(stats["output_tokens"] / wall, 1)}
        keep_leg(f"pairs-{engine}-{limit}", out[engine])
    return out


def teacher_data(work: Path, count: int) -> dict:
    """(c): the embedded model answers `count` Lamini questions through `rayft data generate`."""
    from rayft.config.load import load_pipeline
    from rayft.datatools.teacher_data import generate_data

    questions = work / "questions.txt"
    rows = [json.loads(line) for line in LAMINI.read_text().splitlines() if line.strip()]
    texts = [re.sub(r"^### Question:\s*|\s*### Answer:\s*$", "", r["question"]).replace("\n", " ") for r in rows]
    questions.write_text("".join(t + "\n" for t in texts[:count]))
    out = {}
    for engine in ("hf", "vllm"):
        config = work / f"teacher-{engine}.yaml"
        config.write_text(json.dumps({"model": {"name": "builtin:smollm2-135m-instruct"},
                                      "generation": {"engine": engine, "cpus_per_engine": 2, "teacher": {
                                          "prompts": str(questions), "max_new_tokens": 128, "chunk_rows": 100}}}))
        target = work / f"taught-{engine}.jsonl"
        for leftover in work.glob(f"taught-{engine}.jsonl*"):
            leftover.unlink()
        t0 = time.time()
        stats = generate_data(load_pipeline(config, []), target)
        wall = time.time() - t0
        out[engine] = {"wall_s": round(wall, 1), "answers": count, "written": stats["written"],
                       "cut_at_limit": stats["answers"]["cut_at_limit"], "output_tokens": stats["output_tokens"],
                       "tok_s": round(stats["output_tokens"] / wall, 1)}
    return out


RAY_DATA_LLM = """
import json, sys, time
started = time.time()
import ray
from ray.data.llm import build_processor, vLLMEngineProcessorConfig
prompts, path, out = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
config = vLLMEngineProcessorConfig(
    model_source=path, engine_kwargs={"max_model_len": 2048, "enforce_eager": True, "dtype": "float32"},
    batch_size=32, concurrency=1, chat_template_stage=False, log_engine_metrics=False,
    # On a 2-CPU Ray the pre / post-processing tasks and the tokenize / detokenize actors (1 CPU each
    # by default) and the engine's bundle must fit together, or the pipeline waits forever: a quarter
    # CPU each, the engine's bundle 1 CPU, and the engine told to use both cores' threads anyway (as
    # rayft's actor with 2 CPUs does).
    tokenize_stage={"num_cpus": 0.25}, detokenize_stage={"num_cpus": 0.25},
    placement_group_config={"bundles": [{"CPU": 1}]},
    runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "ERROR", "OMP_NUM_THREADS": "2",
                              "VLLM_CPU_OMP_THREADS_BIND": "nobind"}})
processor = build_processor(config, preprocess=lambda row: {
    "prompt": row["prompt"], "sampling_params": {"temperature": 0.0, "max_tokens": 64}},
    postprocess=lambda row: {"text": row["generated_text"], "tokens": row["num_generated_tokens"]},
    preprocess_map_kwargs={"num_cpus": 0.25}, postprocess_map_kwargs={"num_cpus": 0.25})
rows = processor(ray.data.from_items([{"prompt": p} for p in prompts])).take_all()
json.dump({"wall_s": time.time() - started, "tokens": int(sum(r["tokens"] for r in rows)), "rows": len(rows)},
          open(out, "w"))
"""


def ray_data_llm(work: Path, rows: int) -> dict:
    """(d): the same greedy prompts through Ray Data LLM's processor (in .venv-vllm) and through
    rayft's own engine actors with 1 and 2 CPUs: the measure behind rayft's choice (docs/generation.md)."""
    from rayft.config.load import load_pipeline
    from rayft.eval.compare import held_out
    from rayft.generation.vllm_pool import VLLMPool, find_vllm_python
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.schema.generation import GenerationConfig

    import ray

    loaded = load_pipeline(REPO / "jobs/configs/sft_lamini.yaml", ["data.eval_split=0.3", "eval.num_examples=100000"])
    path = resolve_model(loaded.pipeline.model.name)
    tokenizer = load_tokenizer(path, False, loaded.pipeline.model)
    prompts = held_out(loaded, tokenizer).generated[0][:rows]
    (work / "prompts.json").write_text(json.dumps(prompts))
    python = find_vllm_python(GenerationConfig(engine="vllm"))
    (work / "rdllm.py").write_text(RAY_DATA_LLM)
    subprocess.run([python, str(work / "rdllm.py"), str(work / "prompts.json"), path, str(work / "rdllm.json")],
                   check=True, cwd=work)
    out = {"rows": len(prompts), "ray_data_llm_1cpu": json.loads((work / "rdllm.json").read_text())}
    for cpus in (1, 2):
        t0 = time.time()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        with VLLMPool(path, loaded.pipeline.model, GenerationConfig(engine="vllm", cpus_per_engine=cpus)) as pool:
            gens = pool.answer(tokenizer, prompts, max_new_tokens=64)
        ray.shutdown()
        out[f"rayft_actor_{cpus}cpu"] = {"wall_s": time.time() - t0, "tokens": sum(g[0].new_tokens for g in gens),
                                         "rows": len(gens)}
    for leg in out.values():
        if isinstance(leg, dict):
            leg["wall_s"] = round(leg["wall_s"], 1)
    return out


NAMES = {"ray_data_llm_1cpu": "Ray Data LLM `build_processor` (engine bundle 1 CPU + 4 x 0.25 for its other stages; 2 threads)",
         "rayft_actor_1cpu": "rayft's engine actor, 1 CPU (1 thread)", "rayft_actor_2cpu": "rayft's engine actor, 2 CPUs"}


def markdown(result: dict, command: str) -> str:
    """The docs section; parts not run (or not finished) are said to be missing."""
    a, b, c, d = (result.get(k) for k in ("evaluation", "pairs", "teacher_data", "ray_data_llm"))

    def ratio(part: dict) -> str:
        return f"**{part['hf']['wall_s'] / part['vllm']['wall_s']:.2f}x**"

    lines = [
        "## Generation at scale: hf vs vLLM engines (`generation.engine`)", "",
        f"Command: `{command}` ({result['date']}, {result['machine']}; one run, both engines in the same session; the "
        "embedded 135M model; vLLM = vllm-cpu 0.32 in .venv-vllm, one engine actor with 2 CPUs on Ray; hf = "
        "HF generate in the process, batch 16, 2 torch threads). Wall includes vLLM's engine start-up (shown apart).", "",
        "| work | hf wall s | vLLM wall s (start) | speed-up | hf tok/s | vLLM tok/s (after start) |",
        "|---|---|---|---|---|---|"]
    if a:
        lines.append(
            f"| (a) eval: base + tuned LoRA, {a['rows']} held-out rows, greedy, 64 tokens | {a['engines']['hf']['wall_s']} | "
            f"{a['engines']['vllm']['wall_s']} ({a['engines']['vllm']['start_s']:.0f}) | "
            f"**{a['engines']['hf']['wall_s'] / a['engines']['vllm']['wall_s']:.2f}x** | {a['engines']['hf']['tok_s']} | "
            f"{a['engines']['vllm']['tok_s']} ({a['engines']['vllm']['tok_s_after_start']}) |")
    if b:
        lines.append(f"| (b) dpo_lamini pairs: {b['hf']['answers'] // 5} questions x (4 samples + greedy) | "
                     f"{b['hf']['wall_s']} | {b['vllm']['wall_s']} | {ratio(b)} | {b['hf']['tok_s']} | {b['vllm']['tok_s']} |")
    if c:
        lines.append(f"| (c) `rayft data generate`: {c['hf']['answers']} answers, 128 tokens | {c['hf']['wall_s']} | "
                     f"{c['vllm']['wall_s']} | {ratio(c)} | {c['hf']['tok_s']} | {c['vllm']['tok_s']} |")
    missing = [name for name, part in (("(b) pairs", b), ("(c) teacher data", c), ("(d) Ray Data LLM", d)) if not part]
    if missing:
        lines += ["", f"Not in this run: {', '.join(missing)} (see docs/generation.md)."]
    if a:
        lines += ["", "Same answers (a), greedy, the same prompt tokens on both engines:", "",
                  "| model | answers identical | exact match hf / vLLM | ROUGE-L hf / vLLM |", "|---|---|---|---|"]
        for label in ("base", "tuned"):
            m = a[label]
            lines.append(f"| {label} | {m['agree_exactly']} / {m['of']} | {m['hf']['exact_match']:.3f} / "
                         f"{m['vllm']['exact_match']:.3f} | {m['hf']['rouge_l']:.3f} / {m['vllm']['rouge_l']:.3f} |")
    if b:
        lines += [f"\nNote: {b['hf']['note']}." if b["hf"].get("note") else ""]
        lines += ["", f"Pairs kept: hf {b['hf']['pairs']}, vLLM {b['vllm']['pairs']} (sampled answers differ between "
                  "engines: each samples with its own generator)."]
    if c:
        lines += ["", f"Teacher rows written: hf {c['hf']['written']}, vLLM {c['vllm']['written']} (answers cut at "
                  f"128 tokens dropped: {c['hf']['cut_at_limit']} / {c['vllm']['cut_at_limit']})."]
    if d:
        lines += ["", f"Ray Data LLM's processor or rayft's own engine actors? The same {d['rows']} held-out prompts, "
                  "greedy, 64 tokens, each from a fresh Ray (wall includes Ray and engine start):", "",
                  "| path | wall s | tokens out |", "|---|---|---|",
                  *[f"| {NAMES[name]} | {leg['wall_s']} | {leg['tokens']} |" for name, leg in d.items()
                    if isinstance(leg, dict)]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 / 20 / 20 rows, to check the script")
    parser.add_argument("--sft-steps", type=int, default=40)
    parser.add_argument("--work", default="/tmp/rayft-generation-bench")
    parser.add_argument("--parts", default="a,b,c,d")
    parser.add_argument("--reuse", action="store_true", help="reuse the legs a killed run of the same --work finished")
    parser.add_argument("--write-partial", action="store_true", help="write the docs section from the finished "
                        "legs in --work only (parts not finished are said to be missing)")
    args = parser.parse_args()
    if not LAMINI.is_file():
        sys.exit(f"bench/generation.py needs {LAMINI} (../shared/data)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    LEGS_FILE.append(work / "legs.json")
    if args.write_partial:
        legs = json.loads(LEGS_FILE[0].read_text())
        done = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {_cores()} cores, no GPU",
                **{k: legs[k] for k in ("evaluation", "teacher_data", "ray_data_llm") if k in legs}}
        if "pairs-hf-400" in legs and "pairs-vllm-400" in legs:
            done["pairs"] = {"hf": legs["pairs-hf-400"], "vllm": legs["pairs-vllm-400"]}
        (REPO / "bench/results/generation.json").write_text(json.dumps(done, indent=1))
        write_section(REPO / "docs/benchmarks.md", "generation",
                      markdown(done, "RAYFT_HOME=/tmp/rh .venv/bin/python bench/generation.py"))
        return
    if args.reuse and LEGS_FILE[0].is_file():
        LEGS.update(json.loads(LEGS_FILE[0].read_text()))
        print(f"bench: reusing {sorted(LEGS)} from {LEGS_FILE[0]}", flush=True)
    adapter = train_adapter(work, args.sft_steps)
    parts = set(args.parts.split(","))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {_cores()} cores, no GPU"}
    if "a" in parts:
        result["evaluation"] = LEGS.get("evaluation") or evaluation(adapter, 40 if args.quick else None)
        keep_leg("evaluation", result["evaluation"])
    if "b" in parts:
        result["pairs"] = pairs(adapter, work, 20 if args.quick else 400)
    if "c" in parts:
        result["teacher_data"] = LEGS.get("teacher_data") or teacher_data(work, 20 if args.quick else 500)
        keep_leg("teacher_data", result["teacher_data"])
    if "d" in parts:
        result["ray_data_llm"] = LEGS.get("ray_data_llm") or ray_data_llm(work, 20 if args.quick else 100)
        keep_leg("ray_data_llm", result["ray_data_llm"])
    print(json.dumps(result, indent=1))
    if args.quick or parts != {"a", "b", "c", "d"}:
        return
    (REPO / "bench/results").mkdir(exist_ok=True)
    (REPO / "bench/results/generation.json").write_text(json.dumps(result, indent=1))
    write_section(REPO / "docs/benchmarks.md", "generation",
                  markdown(result, "RAYFT_HOME=/tmp/rh .venv/bin/python bench/generation.py"))


def _cores() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
