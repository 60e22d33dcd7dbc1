"""Base vs tuned: the same held-out questions answered by the base model and by each trained
stage (or any adapter / merged model), scored per example (exact match, ROUGE-L, BLEU), tagged
for error analysis, and scored teacher-forced (answer loss, perplexity; implicit DPO reward and
reward-model accuracy on preference pairs)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayft.config.load import LoadedConfig
from rayft.core.errors import UserError
from rayft.metrics.text import score_pairs, tag_generation
from rayft.metrics.answers import AnswerRule

BASE = "base"


@dataclass
class HeldOut:
    """Every held-out row: what is scored teacher-forced (all of them: cheap) and, up to
    `generate_n` (eval.num_examples: generation is the slow part), what is generated from."""

    prompts: list[str]
    references: list[str]
    rows: Any = None  # tokenized rows (input_ids, labels) for the answer loss, when the data has them
    rejected: list[str] | None = None  # preference data: the rejected answer of each pair
    generate_n: int | None = None  # rows answered by generation (None: all)

    @property
    def generated(self) -> tuple[list[str], list[str]]:
        n = len(self.prompts) if self.generate_n is None else self.generate_n
        return self.prompts[:n], self.references[:n]


@dataclass
class Comparison:
    prompts: list[str]
    references: list[str]
    answers: dict[str, list[str]] = field(default_factory=dict)  # model label -> answers
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # model label -> score_pairs()
    tags: dict[str, list[list[str]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    teacher_forced: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> loss, perplexity, dpo
    reward_models: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> accuracy, margin, scores
    notes: list[str] = field(default_factory=list)  # what could not be evaluated, and why
    benchmarks: dict[str, Any] | None = None  # rayft.eval.benchmarks.run_benchmarks (lm-evaluation-harness)
    arena: dict[str, Any] | None = None  # rayft.eval.arena.run_arena (Bradley-Terry ratings)
    vs_base: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> metric -> paired_bootstrap
    classifiers: dict[str, dict[str, Any]] = field(default_factory=dict)  # classify stage -> base / tuned figures

    def metrics_table(self) -> list[dict[str, Any]]:
        rows = []
        for label, s in self.scores.items():
            tag_counts: dict[str, int] = {}
            for tags in self.tags[label]:
                for t in tags:
                    tag_counts[t] = tag_counts.get(t, 0) + 1
            tf = self.teacher_forced.get(label, {})
            rows.append({"model": label, "n": s["n"], "exact_match": s["exact_match"], "rouge_l": s["rouge_l"],
                         "bleu": s["bleu"], "loss": tf.get("loss"), "perplexity": tf.get("perplexity"),
                         "dpo_accuracy": (tf.get("dpo") or {}).get("accuracy"),
                         "dpo_margin": (tf.get("dpo") or {}).get("margin"),
                         "gen_s": round(self.seconds[label], 1), "tags": tag_counts,
                         "intervals": {**s.get("intervals", {}),
                                       **({"loss": tf["loss_interval"]} if tf.get("loss_interval") else {}),
                                       **({"dpo_accuracy": tf["dpo"]["accuracy_interval"]}
                                          if (tf.get("dpo") or {}).get("accuracy_interval") else {})},
                         "scored_n": tf.get("n"), "vs_base": self.vs_base.get(label, {})})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics_table(), "teacher_forced": self.teacher_forced,
                "reward_models": self.reward_models, "benchmarks": self.benchmarks,
                **({"arena": self.arena} if self.arena is not None else {}),
                **({"classifiers": self.classifiers} if self.classifiers else {}), "notes": self.notes, "examples": [
                    {"prompt": p, "reference": r, **{label: {"answer": self.answers[label][i],
                                                              "tags": self.tags[label][i],
                                                              **self.scores[label]["per_example"][i]}
                                                      for label in self.answers}}
                    for i, (p, r) in enumerate(zip(self.prompts, self.references))]}


def answer_rule(eval_cfg: Any) -> AnswerRule | None:
    """How exact match reads an answer: None for the default (SQuAD-normalized whole texts)."""
    if eval_cfg.answer_pattern is None and list(eval_cfg.normalize) == ["squad"]:
        return None
    return AnswerRule(eval_cfg.answer_pattern, tuple(eval_cfg.normalize))


def compare_models(loaded: LoadedConfig, model_path: str, outputs: dict[str, Path], held: HeldOut,
                   include_base: bool = True) -> Comparison:
    """Answer and score the held-out rows with the base model (if asked) and each output (adapter or
    model folder)."""
    from rayft.generation.parallel import decoding, generate_answers
    from rayft.generation.vllm_pool import answer_models, chosen_engine
    from rayft.metrics.teacher_forced import answer_loss, completion_logprobs, implicit_dpo_rewards
    import torch

    from rayft.models.adapters import load_for_inference
    from rayft.models.loader import load_tokenizer

    cfg = loaded.pipeline
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code, cfg.model)
    prompts, references = held.generated
    comparison = Comparison(prompts, references)
    jobs: list[tuple[str, str, Path | None]] = [(BASE, model_path, None)] if include_base else []
    for label, out in outputs.items():
        is_adapter = (out / "adapter_config.json").is_file()
        jobs.append((label, model_path if is_adapter else str(out), out if is_adapter else None))
    base_logps: tuple[list[float], list[float]] | None = None
    scoring = (cfg.eval.perplexity and held.rows is not None) or held.rejected is not None
    rule = answer_rule(cfg.eval)  # the same for every model
    on_vllm = chosen_engine(cfg.generation) == "vllm"
    if on_vllm:  # every model's answers first: one engine start per base model, adapters as LoRA requests
        written, comparison.seconds, notes = answer_models(jobs, cfg.model, cfg.generation, tokenizer, prompts,
                                                           **decoding(cfg.eval))
        comparison.notes.extend(notes)
    for label, path, adapter in jobs:
        # One load per model when it both generates here and is scored teacher-forced.
        model = (load_for_inference(path, cfg.model, adapter, on_gpu=torch.cuda.is_available())
                 if scoring or (cfg.eval.num_workers == 1 and not on_vllm) else None)
        if on_vllm:
            gens = [g[0] for g in written[label]]
        else:
            t0 = time.time()
            gens = generate_answers(label, path, adapter, cfg.model, tokenizer, prompts, cfg.eval, model)
            comparison.seconds[label] = time.time() - t0
        comparison.answers[label] = [g.text for g in gens]
        comparison.scores[label] = score_pairs(comparison.answers[label], references, rule)
        comparison.tags[label] = [tag_generation(g.text, p, hit_max_tokens=g.hit_max_tokens)
                                  for g, p in zip(gens, prompts)]
        if label != BASE and BASE in comparison.scores:
            comparison.vs_base[label] = differences(comparison.scores[BASE], comparison.scores[label])
        if not scoring:
            continue
        print(f"rayft: scoring held-out answers teacher-forced with {label} ...", flush=True)
        scores: dict[str, Any] = {}
        if cfg.eval.perplexity and held.rows is not None:
            scores.update(answer_loss(model, held.rows, cfg.eval.batch_size, tokenizer.pad_token_id or 0))
        if held.rejected is not None:
            logps = (completion_logprobs(model, tokenizer, held.prompts, held.references, cfg.eval.batch_size),
                     completion_logprobs(model, tokenizer, held.prompts, held.rejected, cfg.eval.batch_size))
            if label == BASE:
                base_logps = logps  # the reference of every implicit reward
            else:
                base_logps = base_logps or _base_logps(model_path, cfg, tokenizer, held)
                scores["dpo"] = implicit_dpo_rewards(cfg.eval.dpo_beta, *logps, *base_logps)
        comparison.teacher_forced[label] = scores
        del model
    return comparison


def differences(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """Tuned minus base per metric on the same rows, with the paired bootstrap's 95% interval and
    whether it excludes zero (a difference beyond resampling noise)."""
    from rayft.metrics.text import paired_bootstrap

    out = {}
    for key in ("exact_match", "rouge_l"):
        a = [float(e[key]) for e in base["per_example"]]
        b = [float(e[key]) for e in tuned["per_example"]]
        if a and len(a) == len(b):
            found = paired_bootstrap(a, b, resamples=2000)
            out[key] = {**found, "excludes_zero": found["low"] > 0 or found["high"] < 0}
    return out


def _base_logps(model_path: str, cfg: Any, tokenizer: Any, held: HeldOut) -> tuple[list[float], list[float]]:
    from rayft.metrics.teacher_forced import completion_logprobs
    from rayft.models.adapters import load_for_inference

    model = load_for_inference(model_path, cfg.model, None)
    return (completion_logprobs(model, tokenizer, held.prompts, held.references, cfg.eval.batch_size),
            completion_logprobs(model, tokenizer, held.prompts, held.rejected, cfg.eval.batch_size))


def held_out(loaded: LoadedConfig, tokenizer: Any, stage_index: int = 0) -> HeldOut:
    """A stage's held-out prompts and reference answers (the same seeded split as training)."""
    from rayft.stages import get_stage

    stage = loaded.pipeline.stages[stage_index]
    data = get_stage(stage.type).prepare_data(stage, tokenizer)
    columns = data.eval.column_names if data.eval is not None else []
    answer = next((c for c in ("reference", "chosen") if c in columns), None)  # preference rows: `chosen`
    if "prompt" not in columns or answer is None:
        raise UserError("eval: no held-out rows with answers; set data.eval_split > 0 or data.eval_path")
    rows = data.eval
    tokenized = {"input_ids", "labels"} <= set(columns)
    return HeldOut(list(rows["prompt"]), list(rows[answer]), rows if tokenized else None,
                   list(rows["rejected"]) if "rejected" in columns else None,
                   generate_n=min(loaded.pipeline.eval.num_examples, len(rows)))
