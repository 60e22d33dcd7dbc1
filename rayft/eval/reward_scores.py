"""Reward models on held-out preference pairs: pairwise accuracy, mean margin and each pair's two
scores, for `eval.reward_model` and for every completed `reward` stage of a run (whose figures also
go into its summary.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayft.config.load import LoadedConfig
from rayft.core.errors import UserError
from rayft.eval.compare import Comparison, HeldOut, held_out


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


def score_reward_stages(loaded: LoadedConfig, run_dir: Path, names: list[str], tokenizer: Any,
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
