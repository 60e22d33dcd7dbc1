"""rayft's serving engine without Ray: requests for different LoRA adapters and the base share one
generation (PEFT's mixed-batch inference) and each gets the answer its model gives alone; evicted
adapters are deleted (the last one unloads PEFT's wrapper); and the parts of a Serve batch meet
for one run (rayft.serve.joint_batch.Meeting), a failing part failing alone."""

from __future__ import annotations

import asyncio

import pytest

from rayft.serve.protocol import GenRequest

PROMPT = "Please send 3 red mugs to Oslo by Tuesday."


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory, tiny_model_path):
    """Two LoRA adapters with random (not identity) weights and a large alpha: each changes the
    tiny model's greedy answer, differently."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lora")
    for seed, name in enumerate(("a", "b"), start=1):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path), LoraConfig(
            r=8, lora_alpha=256, init_lora_weights=False, target_modules="all-linear"))
        model.save_pretrained(root / name)
    return {"a": root / "a", "b": root / "b"}


def _req(max_tokens: int = 8) -> GenRequest:
    return GenRequest(prompt=PROMPT, max_tokens=max_tokens, temperature=0.0)


def test_one_generation_serves_several_adapters_and_the_base(tiny_model_path, adapter_dirs):
    from rayft.serve.engine import GenerationEngine

    engine = GenerationEngine(tiny_model_path)
    alone = {key: engine.generate([_req()], key, adapter_dirs.get(key))[0].texts[0] for key in (None, "a", "b")}
    assert len(set(alone.values())) == 3, alone  # the adapters matter
    keys = ["a", None, "b", "a", "b", None]
    mixed = engine.generate_mixed([_req() for _ in keys], keys, adapter_dirs)
    assert [m.texts[0] for m in mixed] == [alone[k] for k in keys]
    assert engine.loads == 2 and engine.held_adapters() == ["a", "b"]

    engine.release_adapter("a")  # Serve evicted it: deleted at the next call, unless that call uses it
    assert engine.generate([_req()], "b", adapter_dirs["b"])[0].texts[0] == alone["b"]
    assert engine.held_adapters() == ["b"] and engine.evictions == 1
    engine.release_adapter("b")  # the last one: PEFT's wrapper goes, the plain base model stays
    assert engine.generate([_req()])[0].texts[0] == alone[None]
    assert engine.held_adapters() == [] and engine.peft is None
    streamed = "".join(delta for delta, _ in engine.stream(_req(), "a", adapter_dirs["a"]))
    assert streamed == alone["a"] and engine.held_adapters() == ["a"] and engine.loads == 3


def test_a_released_adapter_the_current_call_uses_is_kept(tiny_model_path, adapter_dirs):
    from rayft.serve.engine import GenerationEngine

    engine = GenerationEngine(tiny_model_path)
    engine.generate([_req()], "a", adapter_dirs["a"])
    engine.release_adapter("a")
    engine.generate_mixed([_req(), _req()], ["a", None], adapter_dirs)  # marked, but this call needs it
    assert engine.held_adapters() == ["a"] and engine.loads == 1


def test_parts_of_a_batch_meet_for_one_run_and_fail_alone():
    from rayft.serve.joint_batch import Meeting

    runs: list[list] = []

    async def run(parts):
        runs.append(parts)
        return [ValueError("no such adapter") if part[0] == "bad" else [f"{x}!" for x in part] for part in parts]

    async def main():
        meeting = Meeting(run)
        results = await asyncio.gather(meeting.submit(["a1", "a2"]), meeting.submit(["b1"]),
                                       meeting.submit(["bad"]), return_exceptions=True)
        later = await meeting.submit(["c1"])
        return meeting, results, later

    meeting, results, later = asyncio.run(main())
    assert results[0] == ["a1!", "a2!"] and results[1] == ["b1!"]
    assert isinstance(results[2], ValueError)
    assert runs[0] == [["a1", "a2"], ["b1"], ["bad"]] and runs[1] == [["c1"]] and later == ["c1!"]
    assert meeting.meetings == [3, 1]


def test_a_failing_run_fails_every_part_of_its_meeting():
    from rayft.serve.joint_batch import Meeting

    async def run(parts):
        raise RuntimeError("engine failed")

    async def main():
        meeting = Meeting(run)
        return await asyncio.gather(meeting.submit([1]), meeting.submit([2]), return_exceptions=True)

    assert [type(r) for r in asyncio.run(main())] == [RuntimeError, RuntimeError]
