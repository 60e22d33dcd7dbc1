"""`rayft eval`: what to evaluate (a run's completed stages, or a config's `eval.models`), the
comparison (rayft.eval.compare) and the reward models' scores (rayft.eval.reward_scores), written
as eval.json, the terminal table, report.md and report.html."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rayft.config.load import LoadedConfig
from rayft.core.errors import UserError
from rayft.core.paths import file_safe
from rayft.eval.compare import Comparison, compare_models, held_out
from rayft.eval.reward_scores import score_reward_models, score_reward_stages


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
    classifiers = [s.name for s in completed if s.type == "classify" and stage_output(run_dir / s.name) is not None]
    if not outputs and not rewards and not classifiers:
        raise UserError(f"{run_dir} has no completed stage to evaluate")
    task_plan = _benchmark_plan(loaded, run_dir)  # a bad task name fails here, before any model loads
    model_path = resolve_model(loaded.pipeline.model.name, loaded.pipeline.model.revision)
    tokenizer = load_tokenizer(model_path, loaded.pipeline.model.trust_remote_code, loaded.pipeline.model)
    if outputs and loaded.pipeline.eval.generate:
        held = held_out(loaded, tokenizer)
        comparison = compare_models(loaded, model_path, outputs, held, loaded.pipeline.eval.compare_base)
    else:  # reward models only, or benchmarks only: nothing generates answers to held-out rows
        held, comparison = None, Comparison([], [])
    _benchmarks(loaded, task_plan, model_path, outputs, comparison, run_dir)
    score_reward_stages(loaded, run_dir, rewards, tokenizer, comparison)
    if classifiers:
        from rayft.eval.classify_scores import score_classifiers

        score_classifiers(loaded, run_dir, classifiers, model_path, tokenizer, comparison)
    if loaded.pipeline.eval.reward_model:
        held = held or held_out(loaded, tokenizer)
        comparison.reward_models.update(score_reward_models(
            loaded, {"eval.reward_model": Path(loaded.pipeline.eval.reward_model)}, held))
    return write_outputs(run_dir, loaded, comparison)


def evaluate_config(loaded: LoadedConfig, out_dir: str | Path | None = None) -> Path:
    """`rayft eval CONFIG`: the base model and `eval.models` (adapters, merged models, run stages) on
    the held-out rows of the config's first stage; outputs in `out_dir`."""
    from rayft.models.loader import load_tokenizer, resolve_model

    cfg = loaded.pipeline
    outputs = _named_models(loaded)
    if not outputs and not cfg.eval.compare_base:
        raise UserError("eval.models: nothing to evaluate (no models listed and eval.compare_base is false)")
    if out_dir is None:
        name = loaded.source.stem if loaded.source else "eval"
        out_dir = Path(cfg.storage.path) / f"eval-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task_plan = _benchmark_plan(loaded, out_dir)
    model_path = resolve_model(cfg.model.name, cfg.model.revision)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code, cfg.model)
    held = held_out(loaded, tokenizer) if cfg.eval.generate or cfg.eval.reward_model else None
    comparison = (compare_models(loaded, model_path, outputs, held, cfg.eval.compare_base) if cfg.eval.generate
                  else Comparison([], []))
    if cfg.eval.reward_model:
        comparison.reward_models.update(score_reward_models(
            loaded, {"eval.reward_model": Path(cfg.eval.reward_model)}, held))
    _benchmarks(loaded, task_plan, model_path, outputs, comparison, out_dir)
    from rayft.config.load import dump_yaml

    (out_dir / "config.yaml").write_text(dump_yaml(cfg))
    return write_outputs(out_dir, loaded, comparison)


def _benchmark_plan(loaded: LoadedConfig, out_dir: Path):
    bench = loaded.pipeline.eval.benchmarks
    if bench is None:
        return None
    from rayft.eval.benchmarks import plan

    return plan(bench, out_dir)


def _benchmarks(loaded: LoadedConfig, task_plan, model_path: str, outputs: dict[str, Path], comparison: Comparison,
                out_dir: Path) -> None:
    if task_plan is None:
        return
    from rayft.eval.benchmarks import run_benchmarks

    cfg = loaded.pipeline
    comparison.benchmarks = run_benchmarks(cfg.eval.benchmarks, task_plan, model_path, outputs, cfg.eval.compare_base,
                                           cfg.model, out_dir)
    comparison.notes += comparison.benchmarks["notes"]


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


def write_outputs(out_dir: Path, loaded: LoadedConfig, comparison: Comparison) -> Path:
    from rayft.eval.html_report import write_html_report
    from rayft.records.plots import plot_reward_histogram
    from rayft.eval.report import print_comparison, write_report

    for name, result in comparison.reward_models.items():
        scores = result.get("scores") or {}
        if scores.get("chosen"):
            path = out_dir / "eval_plots" / f"reward_{file_safe(name)}.png"
            result["histogram"] = str(plot_reward_histogram(scores["chosen"], scores["rejected"], path, name))
    (out_dir / "eval.json").write_text(json.dumps(comparison.to_json(), indent=2) + "\n")
    print_comparison(comparison)
    report = write_report(out_dir, loaded, comparison)
    write_html_report(out_dir, loaded, comparison)
    return report

