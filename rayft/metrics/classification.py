"""Classification figures: accuracy, macro F1 (the mean of each label's F1, so a rare label counts
as much as a common one) and the confusion matrix, each accuracy with its bootstrap interval."""

from __future__ import annotations

from typing import Any, Sequence


def classification_scores(predicted: Sequence[int], gold: Sequence[int], names: Sequence[str]) -> dict[str, Any]:
    from rayft.metrics.text import bootstrap_interval

    n = len(gold)
    if n == 0:
        return {"n": 0, "accuracy": None, "macro_f1": None, "confusion": [], "per_label": {}}
    size = len(names)
    confusion = [[0] * size for _ in range(size)]  # rows: gold label, columns: predicted label
    for p, g in zip(predicted, gold):
        confusion[g][p] += 1
    per_label = {}
    for i, name in enumerate(names):
        tp = confusion[i][i]
        fp = sum(confusion[g][i] for g in range(size)) - tp
        fn = sum(confusion[i]) - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    present = [v["f1"] for v in per_label.values() if v["support"]]
    hits = [float(p == g) for p, g in zip(predicted, gold)]
    found = bootstrap_interval(hits)
    return {"n": n, "accuracy": sum(hits) / n, "accuracy_interval": [found["low"], found["high"]],
            "macro_f1": sum(present) / len(present) if present else 0.0, "confusion": confusion,
            "per_label": per_label}


def trainer_metrics(names: Sequence[str]):
    """`compute_metrics` for a transformers Trainer: eval_accuracy and eval_macro_f1."""
    def compute(prediction: Any) -> dict[str, float]:
        import numpy as np

        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        scores = classification_scores(np.argmax(logits, axis=-1).tolist(), list(prediction.label_ids), names)
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}

    return compute
