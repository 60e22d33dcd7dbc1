"""Real 2-worker Ray Train SFT runs on CPU with DeepSpeed ZeRO-2, ZeRO-3 (sharded weights gathered
on save) and QLoRA (a 4-bit NF4 base, bitsandbytes' CPU backend): each finishes, reports the
strategy the Trainer really ran and both workers' peak memory, and writes a standard PEFT adapter
that loads on the plain (unquantized) base and differs from a fresh one."""

from __future__ import annotations

import json

import pytest

from conftest import DEMO_DATA
from rayft.config.load import load_pipeline

pytestmark = pytest.mark.ray

OVERRIDES = ["model.name=builtin:tiny-random", f"data.path={DEMO_DATA}", "data.template=alpaca",
             "data.max_length=160", "data.eval_split=0", "data.max_rows=64", "training.max_steps=3",
             "training.batch_size=2", "training.lr=3e-3", "training.logging_steps=1", "scaling.num_workers=2",
             "eval.enabled=false"]


def _run(tmp_path, name: str, extra: list[str]) -> dict:
    from rayft.train.launch import run_pipeline

    loaded = load_pipeline(None, [*OVERRIDES, f"storage.path={tmp_path}", f"run_name={name}", *extra])
    result = run_pipeline(loaded)
    summary = json.loads((result.run_dir / "sft" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 3
    assert len(summary["peak_rss_mib_per_worker"]) == 2 and min(summary["peak_rss_mib_per_worker"]) > 100
    assert not list((result.run_dir / "sft").glob(".adapter.*")), "no staging or gather-only folder is left"
    return summary


def _assert_trained_adapter_loads(adapter_dir, base_path):
    """The adapter loads with PEFT on the unquantized base, its LoRA B matrices (zero at init)
    moved, and it changes the base model's output."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.numel() > 0 for v in weights.values()), "every tensor gathered, none empty"
    assert sum(float(v.abs().sum()) for v in lora_b) > 0, "LoRA B starts at zero; training must move it"
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        after = tuned(ids).logits
    assert not torch.allclose(before, after), "the trained adapter must change the model's output"
    return tuned


def test_deepspeed_zero2_sft(ray_cluster, tmp_path, tiny_model_path):
    summary = _run(tmp_path, "zero2", ["training.strategy=deepspeed", "training.deepspeed.stage=2"])
    assert summary["strategy"] == "deepspeed-zero2"
    _assert_trained_adapter_loads(tmp_path / "zero2" / "sft" / "adapter", tiny_model_path)


def test_deepspeed_zero3_sft_gathers_the_adapter(ray_cluster, tmp_path, tiny_model_path):
    summary = _run(tmp_path, "zero3", ["training.strategy=deepspeed", "training.deepspeed.stage=3"])
    assert summary["strategy"] == "deepspeed-zero3"
    adapter = tmp_path / "zero3" / "sft" / "adapter"
    assert not (adapter / "training_args.bin").exists()
    tuned = _assert_trained_adapter_loads(adapter, tiny_model_path)
    # Full shapes, not the empty shards ZeRO-3 leaves on each rank.
    a = next(m for n, m in tuned.named_modules() if n.endswith("q_proj")).lora_A["default"].weight
    assert a.shape == (tuned.peft_config["default"].r, tuned.config.hidden_size)


def test_qlora_sft_on_cpu(ray_cluster, tmp_path, tiny_model_path):
    summary = _run(tmp_path, "qlora", ["model.quantization=4bit"])
    assert summary["strategy"] == "ddp"
    adapter = tmp_path / "qlora" / "sft" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    _assert_trained_adapter_loads(adapter, tiny_model_path)
