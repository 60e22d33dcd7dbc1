"""Classifiers on their held-out rows: every completed `classify` stage of a run, against the base
model with the same, untrained head (the stage's starting point, seeded as training seeded it):
accuracy with its interval, macro F1, per-label figures and the confusion matrix as a picture; the
tuned figures also go into the stage's summary.json (`heldout_accuracy`, `heldout_macro_f1`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayft.config.load import LoadedConfig
from rayft.eval.compare import Comparison


def score_classifiers(loaded: LoadedConfig, run_dir: Path, names: list[str], model_path: str, tokenizer: Any,
                      comparison: Comparison) -> None:
    from rayft.metrics.classification import classification_scores
    from rayft.metrics.text import paired_bootstrap
    from rayft.models.classifier import load_classifier, load_trained_classifier, predict
    from rayft.records.plots import plot_confusion
    from rayft.records.rundir import stage_output, write_summary
    from rayft.stages import get_stage

    cfg = loaded.pipeline
    for stage in cfg.stages:
        if stage.name not in names:
            continue
        data = get_stage("classify").prepare_data(stage, tokenizer)
        if data.eval is None or len(data.eval) == 0:
            comparison.notes.append(f"classify stage {stage.name!r} not scored: no held-out rows (data.eval_split: 0)")
            continue
        labels = data.stats["labels"]
        gold = list(data.eval["labels"])
        print(f"rayft: scoring classifier {stage.name} on {len(gold)} held-out rows (and the base model's untrained "
              f"head) ...", flush=True)
        found: dict[str, Any] = {"labels": labels}
        for label, model in (("base (untrained head)", load_classifier(model_path, cfg.model, labels,
                                                                      seed=stage.training.seed).eval()),
                             ("tuned", load_trained_classifier(model_path, stage_output(run_dir / stage.name),
                                                               cfg.model, labels))):
            predicted = predict(model, tokenizer, data.eval, cfg.eval.batch_size)
            scores = classification_scores(predicted, gold, labels)
            scores["picture"] = str(plot_confusion(scores["confusion"], labels, run_dir / "eval_plots" /
                                                   f"confusion_{stage.name}_{label.split()[0]}.png",
                                                   f"{stage.name}: {label}"))
            scores["hits"] = [int(p == g) for p, g in zip(predicted, gold)]
            found[label.split()[0]] = scores
        gain = paired_bootstrap(found["base"]["hits"], found["tuned"]["hits"], resamples=2000)
        found["vs_base"] = {**gain, "excludes_zero": gain["low"] > 0 or gain["high"] < 0}
        comparison.classifiers[stage.name] = found
        write_summary(run_dir / stage.name, heldout_accuracy=found["tuned"]["accuracy"],
                      heldout_macro_f1=found["tuned"]["macro_f1"], heldout_rows=len(gold))
