"""Packing without cross-contamination: per-token logits of a packed batch equal those of the
examples run one by one (sdpa and eager attention on CPU), and packed SFT trains on Ray."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import DEMO_DATA
from rayft.schema.sections import DataConfig, ModelConfig
from rayft.data.build import prepare
from rayft.data.packing import PackedCollator, pack_examples
from rayft.data.tokenize import IGNORE_INDEX


def _items(tokenizer, texts):
    return [{"input_ids": tokenizer(t)["input_ids"], "labels": tokenizer(t)["input_ids"]} for t in texts]


TEXTS = ["Hello there, how are you today?", "The quick brown fox jumps over the lazy dog again and again.",
         "x y z", "One more example here.", "Short.", "A somewhat longer sentence to fill the second row up."]


def test_best_fit_packing_keeps_every_token_once(tiny_tokenizer):
    items = _items(tiny_tokenizer, TEXTS)
    packed = pack_examples(items, max_length=24)
    assert all(len(r["input_ids"]) <= 24 for r in packed)
    assert sum(len(r["seq_lengths"]) for r in packed) == len(items)
    assert sorted(t for r in packed for t in r["input_ids"]) == sorted(t for i in items for t in i["input_ids"])
    assert len(packed) < len(items), "several examples share a row"
    for row in packed:  # each example's first label is masked: no predicting across the boundary
        start = 0
        for length in row["seq_lengths"]:
            assert row["labels"][start] == IGNORE_INDEX
            start += length


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_one_by_one(tiny_model_path, tiny_tokenizer, attn):
    from rayft.models.loader import load_causal_lm

    model = load_causal_lm(tiny_model_path, ModelConfig(attn_implementation=attn)).eval()
    items = _items(tiny_tokenizer, TEXTS)
    packed = pack_examples(items, max_length=32)
    batch = PackedCollator(tiny_tokenizer.pad_token_id)(packed)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits
        leaked = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        checked = 0
        for b, row in enumerate(packed):
            start = 0
            for length in row["seq_lengths"]:
                alone = model(input_ids=torch.tensor([row["input_ids"][start:start + length]])).logits[0]
                torch.testing.assert_close(logits[b, start:start + length], alone, atol=1e-4, rtol=1e-4)
                start += length
                checked += 1
    assert checked == len(TEXTS)
    # The trap the mask avoids: restarted position_ids alone let examples see each other.
    assert (leaked - logits).abs().max() > 1e-2
    # Padding positions produce finite values (no fully-masked rows).
    assert torch.isfinite(logits).all()


def test_prepare_packs_training_rows_only(tiny_tokenizer):
    plain = prepare(DataConfig(path=str(DEMO_DATA), eval_split=20, max_length=512), tiny_tokenizer)
    packed = prepare(DataConfig(path=str(DEMO_DATA), eval_split=20, max_length=512, packing=True), tiny_tokenizer)
    assert packed.stats["train"]["packed_rows"] == len(packed.train) < len(plain.train) / 2
    assert sum(len(ids) for ids in packed.train["input_ids"]) == plain.stats["train"]["tokens"]
    assert len(packed.eval) == len(plain.eval) == 20


@pytest.mark.ray
def test_packed_sft_on_two_ray_workers(ray_cluster, tmp_path):
    from rayft.config.load import load_pipeline
    from rayft.train.launch import run_pipeline

    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", f"data.path={DEMO_DATA}", "data.template=alpaca",
                                "data.packing=true", "data.max_length=512", "data.eval_split=16",
                                "training.max_steps=6", "training.batch_size=1", "training.lr=3e-3",
                                "training.logging_steps=1", f"storage.path={tmp_path}", "run_name=packed",
                                "eval.enabled=false"])
    run_pipeline(loaded)
    summary = json.loads((tmp_path / "packed" / "sft" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 6
    assert summary["data"]["train"]["packed_rows"] > 0
    losses = [loss for _, loss in summary["loss_history"]]
    assert losses[-1] < losses[0]
    # 6 steps x 1 packed row x 2 workers of ~512 real tokens each, not a 4-D mask's sum.
    assert 6 * 2 * 300 < summary["num_tokens"] < 6 * 2 * 512


def test_the_progress_line_of_a_packed_stage_shows_no_nan_tokens(capsys):
    """TRL logs num_tokens as NaN for packed rows; the progress line printed `nan tok/s` at every step."""
    from types import SimpleNamespace

    from rayft.records.progress import ProgressCallback

    progress = ProgressCallback("sft", started_at=0.0)
    state = SimpleNamespace(global_step=3, max_steps=10, is_world_process_zero=True, log_history=[])
    progress.on_train_begin(None, state, None)
    progress.on_log(None, state, None, logs={"loss": 1.5, "num_tokens": float("nan")})
    line = capsys.readouterr().out
    assert "[sft] step 3/10" in line and "nan" not in line
    progress.on_log(None, state, None, logs={"loss": 1.4, "num_tokens": 600.0})
    assert "tok/s" in capsys.readouterr().out
