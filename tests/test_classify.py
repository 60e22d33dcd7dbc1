"""The `classify` stage: GLUE-style rows (a text or a text pair, labels as names or integers), the label
map inferred and saved, dynamic padding, accuracy / macro F1 / confusion matrix, base (untrained head)
vs tuned; on the embedded model (quality) and on a local encoder folder (mechanics)."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from conftest import write_jsonl
from rayft.config.load import load_pipeline
from rayft.data.accounting import account

GOOD = ["wonderful", "great", "excellent", "lovely", "superb", "delightful"]
BAD = ["awful", "terrible", "horrible", "dreadful", "poor", "disappointing"]
ITEMS = ["film", "meal", "hotel", "book", "concert", "service", "phone", "game"]


def _reviews(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = rng.random() < 0.5
        rows.append({"sentence": f"Review {i}: the {rng.choice(ITEMS)} was {rng.choice(GOOD if good else BAD)}.",
                     "label": "positive" if good else "negative"})
    return rows


def _stage(tmp_path, rows, **extra):
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    loaded = load_pipeline(None, [f"data.path={path}", "data.eval_split=4", "data.on_error=skip",
                                  "stages=[{type: classify, text_column: sentence}]", f"storage.path={tmp_path}",
                                  *[f"stages.0.{k}={json.dumps(v)}" for k, v in extra.items()]])
    return loaded.pipeline.stages[0], path


def test_rows_labels_and_counts(tmp_path, tiny_tokenizer):
    """Names become ids in sorted order; a row without a label is skipped naming its file:line; a
    held-out label the training rows never had is counted, not guessed; the counts add up."""
    from rayft.data.classification import prepare_classification

    rows = _reviews(20) + [{"sentence": "no label here"}]
    held = write_jsonl(tmp_path / "held.jsonl", _reviews(3, seed=1) + [{"sentence": "Review x: odd.", "label": "mixed"}])
    stage, path = _stage(tmp_path, rows, data={"eval_path": str(held), "on_error": "skip"})
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    data = prepare_classification(stage, tiny_tokenizer)
    assert data.stats["labels"] == ["negative", "positive"]
    assert [p.origin for p in data.problems] == [f"{path}:21"] and "missing field 'label'" in data.problems[0].detail
    counts = account(data.stats)
    assert counts["adds_up"], counts["problems"]
    assert counts["lines"]["rows read"] == 21 and len(data.eval) == 3
    assert counts["lines"]["held out, dropped: label not among the training labels"] == 1
    assert set(data.train.column_names) == {"input_ids", "attention_mask", "labels"}
    lengths = {len(ids) for ids in data.train["input_ids"]}
    assert len(lengths) > 1  # not padded: the collator pads each batch (dynamic padding)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_integer_labels_and_text_pairs(tmp_path, tiny_tokenizer):
    """A GLUE pair task as it ships (sentence1, sentence2, label 0/1): both texts in one input."""
    from rayft.data.classification import prepare_classification

    rows = [{"sentence1": f"A cat sat {i}.", "sentence2": f"A cat {'sat' if i % 2 else 'ran'} {i}.", "label": i % 2}
            for i in range(12)]
    stage, _ = _stage(tmp_path, rows, text_column="sentence1", pair_column="sentence2")
    data = prepare_classification(stage, tiny_tokenizer)
    assert data.stats["labels"] == ["0", "1"]
    first = tiny_tokenizer.decode(data.train[0]["input_ids"])
    assert "A cat sat" in first and ("A cat ran" in first or "A cat sat" in first.split(".", 1)[1])


def test_a_local_encoder_folder_classifies(tmp_path, tiny_model_path, tiny_tokenizer):
    """An encoder (a small random BERT saved as a local folder) gets its own classification head."""
    from transformers import BertConfig, BertForMaskedLM

    from rayft.data.classification import prepare_classification
    from rayft.models.classifier import load_classifier, predict
    from rayft.schema.sections import ModelConfig

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64, pad_token_id=0)).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    stage, _ = _stage(tmp_path, _reviews(12))
    data = prepare_classification(stage, tiny_tokenizer)
    model = load_classifier(str(folder), ModelConfig(name=str(folder)), data.stats["labels"]).eval()
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.id2label[1] == "positive"
    assert set(predict(model, tiny_tokenizer, data.eval)) <= {0, 1}


@pytest.mark.ray
@pytest.mark.embedded
def test_classify_on_the_embedded_model_beats_its_untrained_head(ray_cluster, tmp_path):
    """LoRA on the embedded model's score head and layers, 30 steps on 160 short reviews: the tuned
    classifier's held-out accuracy beats the base model's untrained head, in summary.json, eval.json,
    the report and the confusion matrices; the adapter folder rebuilds the classifier."""
    from rayft.cli import main

    path = write_jsonl(tmp_path / "reviews.jsonl", _reviews(200))
    config = tmp_path / "classify.yaml"
    config.write_text(json.dumps({
        "run_name": "reviews", "model": {"name": "builtin:smollm2-135m-instruct"},
        "data": {"path": str(path), "eval_split": 40, "max_length": 64},
        "stages": [{"type": "classify", "text_column": "sentence"}],
        "training": {"max_steps": 30, "batch_size": 8, "lr": 1e-3, "eval_steps": 15, "gradient_checkpointing": False},
        "scaling": {"num_workers": 1}, "storage": {"path": str(tmp_path / "runs")}}))
    assert main(["train", str(config)]) == 0
    run = tmp_path / "runs" / "reviews"
    summary = json.loads((run / "classify" / "summary.json").read_text())
    assert summary["status"] == "completed" and "eval_accuracy" in summary and "eval_macro_f1" in summary
    adapter = json.loads((run / "classify" / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS"
    found = json.loads((run / "eval.json").read_text())["classifiers"]["classify"]
    assert found["tuned"]["n"] == 40 and found["tuned"]["accuracy"] >= 0.85, found["tuned"]
    assert found["tuned"]["accuracy"] > found["base"]["accuracy"] + 0.2 and found["vs_base"]["excludes_zero"]
    assert summary["heldout_accuracy"] == found["tuned"]["accuracy"]
    report = (run / "report.md").read_text()
    assert "## Classifier `classify` on held-out rows" in report and "untrained head" in report
    assert (run / "eval_plots" / "confusion_classify_tuned.png").stat().st_size > 3000
