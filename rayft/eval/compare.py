"""Base vs tuned: the same held-out questions answered by the base model and by each trained
stage (or any adapter / merged model), scored per example (exact match, ROUGE-L, BLEU), tagged
for error analysis, and scored teacher-forced (answer loss, perplexity; implicit DPO reward and
reward-model accuracy on preference pairs)."""

from __future__ import annotations

import json
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
    """Held-out rows: what is generated from, and what is scored teacher-forced."""

    prompts: list[str]
    references: list[str]
    rows: Any = None  # tokenized rows (input_ids, labels) for the answer loss, when the data has them
    rejected: list[str] | None = None  # preference data: the rejected answer of each pair


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
                         "gen_s": round(self.seconds[label], 1), "tags": tag_counts})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics_table(), "teacher_forced": self.teacher_forced,
                "reward_models": self.reward_models, "notes": self.notes, "examples": [
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
    from rayft.generation.parallel import generate_answers
    from rayft.metrics.teacher_forced import answer_loss, completion_logprobs, implicit_dpo_rewards
    import torch

    from rayft.models.adapters import load_for_inference
    from rayft.models.loader import load_tokenizer

    cfg = loaded.pipeline
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    comparison = Comparison(held.prompts, held.references)
    jobs: list[tuple[str, str, Path | None]] = [(BASE, model_path, None)] if include_base else []
    for label, out in outputs.items():
        is_adapter = (out / "adapter_config.json").is_file()
        jobs.append((label, model_path if is_adapter else str(out), out if is_adapter else None))
    base_logps: tuple[list[float], list[float]] | None = None
    scoring = (cfg.eval.perplexity and held.rows is not None) or held.rejected is not None
    rule = answer_rule(cfg.eval)  # the same for every model
    for label, path, adapter in jobs:
        # One load per model when it both generates here and is scored teacher-forced.
        model = (load_for_inference(path, cfg.model, adapter, on_gpu=torch.cuda.is_available())
                 if scoring or cfg.eval.num_workers == 1 else None)
        t0 = time.time()
        gens = generate_answers(label, path, adapter, cfg.model, tokenizer, held.prompts, cfg.eval, model)
        comparison.seconds[label] = time.time() - t0
        comparison.answers[label] = [g.text for g in gens]
        comparison.scores[label] = score_pairs(comparison.answers[label], held.references, rule)
        comparison.tags[label] = [tag_generation(g.text, p, hit_max_tokens=g.hit_max_tokens)
                                  for g, p in zip(gens, held.prompts)]
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
    n = min(loaded.pipeline.eval.num_examples, len(data.eval))
    rows = data.eval.select(range(n))
    tokenized = {"input_ids", "labels"} <= set(columns)
    return HeldOut(list(rows["prompt"]), list(rows[answer]), rows if tokenized else None,
                   list(rows["rejected"]) if "rejected" in columns else None)


def score_reward_models(loaded: LoadedConfig, reward_dirs: dict[str, Path], held: HeldOut) -> dict[str, dict]:
    """Pairwise accuracy and mean margin of each reward model on held-out preference pairs, with
    each pair's two scores (`scores.chosen`, `scores.rejected`: the report's histogram)."""
    from rayft.metrics.teacher_forced import pairwise_accuracy
    from rayft.models.reward_model import RewardScorer

    if held.rejected is None:
        return {}
    results = {}
    for name, folder in reward_dirs.items():
        print(f"rayft: scoring {len(held.prompts)} held-out pairs with reward model {name} ...", flush=True)
        scorer = RewardScorer(folder, batch_size=loaded.pipeline.eval.batch_size)
        chosen = scorer.score_pairs(held.prompts, held.references)
        rejected = scorer.score_pairs(held.prompts, held.rejected)
        results[name] = {**pairwise_accuracy(chosen, rejected), "n": len(chosen),
                         "scores": {"chosen": chosen, "rejected": rejected}}
    return results


def _score_reward_stages(loaded: LoadedConfig, run_dir: Path, names: list[str], tokenizer: Any,
                         comparison: Comparison) -> None:
    """Each completed reward stage on its own held-out pairs; the figures also go into the stage's
    summary.json (`heldout_accuracy`, `heldout_margin`, `heldout_pairs`)."""
    from rayft.records.rundir import write_summary

    for index, stage in enumerate(loaded.pipeline.stages):
        if stage.name not in names:
            continue
        try:
            held = held_out(loaded, tokenizer, index)
        except UserError as exc:
            comparison.notes.append(f"reward stage {stage.name!r} not scored: {exc}")
            continue
        found = score_reward_models(loaded, {stage.name: run_dir / stage.name}, held)
        comparison.reward_models.update(found)
        if stage.name in found:
            r = found[stage.name]
            write_summary(run_dir / stage.name, heldout_accuracy=r["accuracy"], heldout_margin=r["margin"],
                          heldout_pairs=r["n"])


def evaluate_run(loaded: LoadedConfig, run_dir: str | Path) -> Path:
    """`rayft eval RUN_DIR`: compare base and every completed policy stage of `run_dir`, score every
    completed reward stage on its own held-out pairs; write the report. A run with only reward
    stages is a reward-model evaluation: no answers are generated."""
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.stages import get_stage
    from rayft.records.rundir import read_summary, stage_output

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    completed = [s for s in loaded.pipeline.stages if (read_summary(run_dir / s.name) or {}).get("status") == "completed"]
    outputs = {s.name: stage_output(run_dir / s.name) for s in completed if get_stage(s.type).produces_policy}
    outputs = {k: v for k, v in outputs.items() if v is not None}
    outputs.update(_named_models(loaded))
    rewards = [s.name for s in completed if s.type == "reward" and stage_output(run_dir / s.name) is not None]
    if not outputs and not rewards:
        raise UserError(f"{run_dir} has no completed stage to evaluate")
    model_path = resolve_model(loaded.pipeline.model.name, loaded.pipeline.model.revision)
    tokenizer = load_tokenizer(model_path, loaded.pipeline.model.trust_remote_code)
    if outputs:
        held = held_out(loaded, tokenizer)
        comparison = compare_models(loaded, model_path, outputs, held, loaded.pipeline.eval.compare_base)
    else:  # reward models only: nothing generates text
        held, comparison = None, Comparison([], [])
    _score_reward_stages(loaded, run_dir, rewards, tokenizer, comparison)
    if loaded.pipeline.eval.reward_model:
        held = held or held_out(loaded, tokenizer)
        comparison.reward_models.update(score_reward_models(
            loaded, {"eval.reward_model": Path(loaded.pipeline.eval.reward_model)}, held))
    return _write_outputs(run_dir, loaded, comparison)


def evaluate_config(loaded: LoadedConfig, out_dir: str | Path | None = None) -> Path:
    """`rayft eval CONFIG`: the base model and `eval.models` (adapters, merged models, run stages) on
    the held-out rows of the config's first stage; outputs in `out_dir`."""
    from rayft.models.loader import load_tokenizer, resolve_model

    cfg = loaded.pipeline
    outputs = _named_models(loaded)
    if not outputs and not cfg.eval.compare_base:
        raise UserError("eval.models: nothing to evaluate (no models listed and eval.compare_base is false)")
    model_path = resolve_model(cfg.model.name, cfg.model.revision)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    held = held_out(loaded, tokenizer)
    comparison = compare_models(loaded, model_path, outputs, held, cfg.eval.compare_base)
    if cfg.eval.reward_model:
        comparison.reward_models.update(score_reward_models(
            loaded, {"eval.reward_model": Path(cfg.eval.reward_model)}, held))
    if out_dir is None:
        name = loaded.source.stem if loaded.source else "eval"
        out_dir = Path(cfg.storage.path) / f"eval-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from rayft.config.load import dump_yaml

    (out_dir / "config.yaml").write_text(dump_yaml(cfg))
    return _write_outputs(out_dir, loaded, comparison)


def _named_models(loaded: LoadedConfig) -> dict[str, Path]:
    """`eval.models`, each resolved to an adapter or model folder (a stage folder -> its output)."""
    from rayft.records.rundir import stage_output

    found: dict[str, Path] = {}
    for label, path in loaded.pipeline.eval.models.items():
        folder = Path(path)
        if not folder.is_dir():
            raise UserError(f"eval.models.{label}: {folder}: no such folder")
        if (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file():
            found[label] = folder
        elif stage_output(folder) is not None:
            found[label] = stage_output(folder)
        else:
            raise UserError(f"eval.models.{label}: {folder} holds no adapter (adapter_config.json), model "
                            f"(config.json) or finished stage output (adapter/ or model/)")
    return found


def _write_outputs(out_dir: Path, loaded: LoadedConfig, comparison: Comparison) -> Path:
    from rayft.eval.html_report import write_html_report
    from rayft.records.plots import plot_reward_histogram
    from rayft.eval.report import print_comparison, write_report

    for name, result in comparison.reward_models.items():
        scores = result.get("scores") or {}
        if scores.get("chosen"):
            path = out_dir / "eval_plots" / f"reward_{_file_safe(name)}.png"
            result["histogram"] = str(plot_reward_histogram(scores["chosen"], scores["rejected"], path, name))
    (out_dir / "eval.json").write_text(json.dumps(comparison.to_json(), indent=2) + "\n")
    print_comparison(comparison)
    report = write_report(out_dir, loaded, comparison)
    write_html_report(out_dir, loaded, comparison)
    return report


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
