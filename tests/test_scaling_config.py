"""Scaling options without Ray: impossible combinations are config errors naming the field, the
DeepSpeed / FSDP settings handed to transformers, the user's DeepSpeed file, and the memory
estimate (checked against a real PEFT model's parameter counts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rayft.config.load import load_pipeline
from rayft.core.errors import ConfigError


@pytest.mark.parametrize("overrides,expected", [
    (["training.precision=fp16"], "training.precision: fp16 needs GPU workers"),
    (["training.precision=bf16"], "training.precision: bf16 needs GPU workers"),
    (["training.deepspeed.offload_optimizer=true"],
     "training.deepspeed.offload_optimizer: only used with training.strategy: deepspeed"),
    (["training.strategy=fsdp", "training.deepspeed.config_file=ds.json"],
     "training.deepspeed.config_file: only used with training.strategy: deepspeed"),
    (["training.fsdp.cpu_offload=true"], "training.fsdp.cpu_offload: only used with training.strategy: fsdp"),
    (["training.strategy=deepspeed", "training.deepspeed.offload_params=true"],
     "training.deepspeed.offload_params: DeepSpeed offloads parameters with ZeRO stage 3 only"),
    (["model.quantization=4bit", "training.strategy=deepspeed", "training.deepspeed.stage=3"],
     "training.deepspeed.stage: ZeRO-3 partitions the parameters"),
    (["model.quantization=8bit", "training.strategy=fsdp", "scaling.use_gpu=true"],
     "training.strategy: fsdp cannot shard a bitsandbytes-quantized base"),
    (["model.quantization=4bit", "adapter.type=full"], "model.quantization: a quantized base is frozen"),
    (["training.strategy=fsdp"], "training.strategy: fsdp needs GPU workers"),
    (["stages=[{type: ppo, rewards: ['m:f'], training: {strategy: deepspeed}}]"],
     "stages.0.training.strategy: the PPO stage runs rayft's own training loop"),
    (["model.quantization=3bit"], "model.quantization.mode"),
    (["model.quantization={mode: 4bit, quant_type: nf5}"], "model.quantization.quant_type"),
    (["training.deepspeed.stage=4"], "training.deepspeed.stage"),
])
def test_impossible_combinations_name_the_field(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_pipeline(None, overrides)
    assert expected in str(err.value)


def test_possible_combinations_validate():
    qlora = load_pipeline(None, ["model.quantization=4bit", "training.strategy=deepspeed"]).pipeline
    assert qlora.model.quantization.mode == "4bit" and qlora.model.quantization.quant_type == "nf4"
    assert qlora.model.quantization.double_quant and qlora.stages[0].training.deepspeed.stage == 2
    gpu = load_pipeline(None, ["scaling.use_gpu=true", "training.precision=bf16", "training.strategy=fsdp",
                             "training.fsdp.cpu_offload=true", "training.gradient_checkpointing=true"]).pipeline
    assert gpu.stages[0].training.fsdp.cpu_offload
    zero3 = load_pipeline(None, ["training.strategy=deepspeed", "training.deepspeed.stage=3",
                               "training.deepspeed.offload_params=true",
                               "training.deepspeed.offload_optimizer=true"]).pipeline
    assert zero3.stages[0].training.deepspeed.offload_params


def test_generated_deepspeed_config_leaves_numbers_to_transformers():
    from rayft.schema.sections import TrainingConfig
    from rayft.compute.strategy import strategy_kwargs

    training = TrainingConfig(strategy="deepspeed", deepspeed={"stage": 3, "offload_optimizer": True,
                                                               "offload_params": True})
    kwargs = strategy_kwargs(training, on_gpu=True)
    ds = kwargs["deepspeed"]
    assert kwargs["use_cpu"] is False  # transformers ignores DeepSpeed with use_cpu=True
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"
    assert ds["bf16"]["enabled"] == "auto" and ds["gradient_clipping"] == "auto"
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_param"]["device"] == "cpu"
    assert ds["optimizer"]["type"] == "AdamW"  # ZeRO-Offload needs DeepSpeed's CPU Adam
    stage2 = strategy_kwargs(TrainingConfig(strategy="deepspeed"), on_gpu=False)["deepspeed"]
    assert stage2["zero_optimization"]["stage"] == 2 and "optimizer" not in stage2
    assert "offload_optimizer" not in stage2["zero_optimization"]
    assert strategy_kwargs(TrainingConfig(), on_gpu=False) == {}

    # transformers accepts the generated config and fills the "auto" values from the arguments.
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    filled = HfTrainerDeepSpeedConfig(stage2)
    assert filled.get_value("zero_optimization.stage") == 2


def test_fsdp_kwargs_use_fsdp2_with_full_state_dict():
    from rayft.schema.sections import TrainingConfig
    from rayft.compute.strategy import strategy_kwargs

    kwargs = strategy_kwargs(TrainingConfig(strategy="fsdp", fsdp={"sharding": "shard_grad_op",
                                                                   "wrap_layers": ["LlamaDecoderLayer"]}), True)
    assert kwargs["fsdp"] is True
    cfg = kwargs["fsdp_config"]
    assert cfg["version"] == 2 and cfg["reshard_after_forward"] is False
    assert cfg["state_dict_type"] == "FULL_STATE_DICT" and cfg["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]


def test_user_deepspeed_file_replaces_the_generated_one(tmp_path):
    from rayft.compute.strategy import load_user_deepspeed_config, strategy_kwargs

    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 1}, "train_batch_size": "auto"}))
    (tmp_path / "run.yaml").write_text("training: {strategy: deepspeed, deepspeed: {config_file: ds.json}}\n")
    loaded = load_pipeline(tmp_path / "run.yaml")
    path = loaded.pipeline.stages[0].training.deepspeed.config_file
    assert path == str(tmp_path / "ds.json"), "relative to the config file"
    user = load_user_deepspeed_config(path)
    assert strategy_kwargs(loaded.pipeline.stages[0].training, False, user)["deepspeed"] == user


def test_user_deepspeed_file_errors_name_field_and_line(tmp_path):
    from rayft.compute.strategy import load_user_deepspeed_config

    with pytest.raises(ConfigError, match="training.deepspeed.config_file: cannot read"):
        load_user_deepspeed_config(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "zero_optimization": {"stage": 2},\n  oops\n}\n')
    with pytest.raises(ConfigError, match=r"bad.json:3: not valid JSON"):
        load_user_deepspeed_config(str(bad))


def test_cli_rejects_fp16_on_cpu_with_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("training: {precision: fp16}\n")
    out = subprocess.run([sys.executable, "-m", "rayft", "config", "show", str(cfg)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 2 and "training.precision: fp16 needs GPU workers" in out.stderr
    assert "Traceback" not in out.stderr


def test_memory_estimate_shapes_match_real_models(tiny_model_path):
    """The parameter counts behind docs/scaling.md's table: the published sizes, and PEFT's own
    count of LoRA parameters on a real (tiny) model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rayft.compute.memory import SHAPES, ModelShape

    assert abs(SHAPES["135M"].params() - 134.5e6) < 1e6
    assert abs(SHAPES["1B"].params() - 1.236e9) < 5e6
    assert abs(SHAPES["7B"].params() - 6.738e9) < 5e6
    assert abs(SHAPES["70B"].params() - 70.55e9) < 5e7
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    shape = ModelShape.from_hf_config(model.config)
    assert shape.params() == sum(p.numel() for p in model.parameters())
    peft = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    assert shape.lora_params(8) == sum(p.numel() for p in peft.parameters() if p.requires_grad)


def test_memory_estimate_sharding():
    from rayft.compute.memory import SHAPES, estimate_gib, estimate_table

    shape = SHAPES["7B"]
    ddp = estimate_gib(shape, "full", "ddp", 8)
    assert ddp["total"] == pytest.approx(16 * shape.params() / 2**30)  # 2 + 2 + 12 bytes per parameter
    zero2 = estimate_gib(shape, "full", "zero2", 8)
    zero3 = estimate_gib(shape, "full", "zero3", 8)
    assert zero2["weights"] == ddp["weights"] and zero2["optimizer"] == pytest.approx(ddp["optimizer"] / 8)
    assert zero3["total"] == pytest.approx(ddp["total"] / 8)
    lora, qlora = estimate_gib(shape, "lora", "ddp", 8), estimate_gib(shape, "qlora", "ddp", 8)
    assert qlora["weights"] < lora["weights"] / 3 and qlora["optimizer"] == lora["optimizer"]
    with pytest.raises(ValueError, match="method"):
        estimate_gib(shape, "half", "ddp", 8)
    table = estimate_table()
    assert "| 70B (Llama-3-70B) | 70.55B | qlora |" in table and "n/a" in table


def test_scaling_doc_holds_the_current_estimate_tables():
    """docs/scaling.md's tables are `python -m rayft.compute.memory`'s output, kept in step."""
    from conftest import REPO
    from rayft.compute.memory import breakdown_table, estimate_table

    doc = (REPO / "docs" / "scaling.md").read_text()
    assert estimate_table() in doc and breakdown_table() in doc
    assert "## Checkpoints, resume and failures" in doc
