"""Base vs tuned: the same held-out questions answered by the base model and by each trained
stage, scored per example (exact match, ROUGE-L, BLEU) and tagged for error analysis."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayft.config_io import LoadedConfig
from rayft.errors import UserError
from rayft.eval.generate import generate
from rayft.eval.metrics import score_pairs, tag_generation

BASE = "base"


@dataclass
class Comparison:
    prompts: list[str]
    references: list[str]
    answers: dict[str, list[str]] = field(default_factory=dict)  # model label -> answers
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # model label -> score_pairs()
    tags: dict[str, list[list[str]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def metrics_table(self) -> list[dict[str, Any]]:
        rows = []
        for label, s in self.scores.items():
            tag_counts: dict[str, int] = {}
            for tags in self.tags[label]:
                for t in tags:
                    tag_counts[t] = tag_counts.get(t, 0) + 1
            rows.append({"model": label, "n": s["n"], "exact_match": s["exact_match"], "rouge_l": s["rouge_l"],
                         "bleu": s["bleu"], "gen_s": round(self.seconds[label], 1), "tags": tag_counts})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics_table(), "examples": [
            {"prompt": p, "reference": r, **{label: {"answer": self.answers[label][i],
                                                      "tags": self.tags[label][i],
                                                      **self.scores[label]["per_example"][i]}
                                              for label in self.answers}}
            for i, (p, r) in enumerate(zip(self.prompts, self.references))]}


def compare_models(loaded: LoadedConfig, model_path: str, outputs: dict[str, Path], prompts: list[str],
                   references: list[str], include_base: bool = True) -> Comparison:
    """Answer `prompts` with the base model (if asked) and each stage output (adapter or model)."""
    from rayft.models.adapters import load_for_inference
    from rayft.models.loader import load_tokenizer

    cfg = loaded.pipeline
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    comparison = Comparison(prompts, references)
    jobs: list[tuple[str, str, Path | None]] = [(BASE, model_path, None)] if include_base else []
    for label, out in outputs.items():
        is_adapter = (out / "adapter_config.json").is_file()
        jobs.append((label, model_path if is_adapter else str(out), out if is_adapter else None))
    for label, path, adapter in jobs:
        print(f"rayft: generating {len(prompts)} answers with {label} ...", flush=True)
        model = load_for_inference(path, cfg.model, adapter)
        t0 = time.time()
        gens = generate(model, tokenizer, prompts, max_new_tokens=cfg.eval.max_new_tokens,
                        batch_size=cfg.eval.batch_size, do_sample=cfg.eval.do_sample,
                        temperature=cfg.eval.temperature, top_p=cfg.eval.top_p)
        comparison.seconds[label] = time.time() - t0
        comparison.answers[label] = [g.text for g in gens]
        comparison.scores[label] = score_pairs(comparison.answers[label], references)
        comparison.tags[label] = [tag_generation(g.text, p, hit_max_tokens=g.hit_max_tokens)
                                  for g, p in zip(gens, prompts)]
        del model
    return comparison


def held_out(loaded: LoadedConfig, tokenizer: Any) -> tuple[list[str], list[str]]:
    """The first stage's held-out prompts and reference answers (same seeded split as training)."""
    from rayft.stages import get_stage

    stage = loaded.pipeline.stages[0]
    data = get_stage(stage.type).prepare_data(stage, tokenizer)
    columns = data.eval.column_names if data.eval is not None else []
    answer = next((c for c in ("reference", "chosen") if c in columns), None)  # preference rows: `chosen`
    if "prompt" not in columns or answer is None:
        raise UserError("eval: no held-out rows with answers; set data.eval_split > 0 or data.eval_path")
    n = min(loaded.pipeline.eval.num_examples, len(data.eval))
    return list(data.eval["prompt"][:n]), list(data.eval[answer][:n])


def evaluate_run(loaded: LoadedConfig, run_dir: str | Path) -> Path:
    """`rayft eval`: compare base and every completed stage of `run_dir`; write the report."""
    from rayft.eval.report import print_comparison, write_report
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.train.rundir import read_summary, stage_output

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--run: {run_dir}: no such run directory")
    from rayft.stages import get_stage

    outputs = {s.name: stage_output(run_dir / s.name) for s in loaded.pipeline.stages
               if (read_summary(run_dir / s.name) or {}).get("status") == "completed"
               and get_stage(s.type).produces_policy}
    outputs = {k: v for k, v in outputs.items() if v is not None}
    if not outputs:
        raise UserError(f"--run: {run_dir} has no completed stage to evaluate")
    model_path = resolve_model(loaded.pipeline.model.name, loaded.pipeline.model.revision)
    prompts, refs = held_out(loaded, load_tokenizer(model_path, loaded.pipeline.model.trust_remote_code))
    comparison = compare_models(loaded, model_path, outputs, prompts, refs, loaded.pipeline.eval.compare_base)
    (run_dir / "eval.json").write_text(json.dumps(comparison.to_json(), indent=2) + "\n")
    print_comparison(comparison)
    return write_report(run_dir, loaded, comparison)
