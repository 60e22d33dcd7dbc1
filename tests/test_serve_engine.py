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


@pytest.fixture(scope="module")
def ia3_dir(tmp_path_factory, tiny_model_path):
    """An IA3 adapter whose scaling vectors are random (not the identity it starts as)."""
    import torch
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path), IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_l" in name:
                param.copy_(torch.rand_like(param) * 4)
    out = tmp_path_factory.mktemp("ia3") / "ia3"
    model.save_pretrained(out)
    return out


def test_an_ia3_request_never_shares_a_generation_with_another_adapter(tiny_model_path, adapter_dirs, ia3_dir):
    """PEFT's mixed batch silently applies the active adapter to every row for IA3: an IA3 request
    and LoRA / base requests sent together must each get the answer they get alone."""
    from rayft.serve.engine import GenerationEngine

    paths = {**adapter_dirs, "ia3": ia3_dir}
    engine = GenerationEngine(tiny_model_path)
    alone = {key: engine.generate([_req()], key, paths.get(key))[0].texts[0] for key in (None, "a", "ia3")}
    assert len(set(alone.values())) == 3, alone  # the IA3 adapter matters
    keys = ["ia3", "a", None, "ia3", "a"]
    mixed = engine.generate_mixed([_req() for _ in keys], keys, paths)
    assert [m.texts[0] for m in mixed] == [alone[k] for k in keys]
    streamed = "".join(delta for delta, _ in engine.stream(_req(), "ia3", ia3_dir))
    assert streamed == alone["ia3"]
    engine.release_adapter("ia3")  # the last IA3 adapter: its copy of the base goes
    assert engine.generate_mixed([_req(), _req()], ["a", None], paths)[0].texts[0] == alone["a"]
    assert engine.side is None and engine.held_adapters() == ["a"]


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


def test_an_ia3_adapter_merges_into_its_base(tmp_path, tiny_model_path, ia3_dir):
    """`rayft merge` folds IA3 as it folds LoRA: the merged model answers as base + adapter does."""
    from rayft.cli import main
    from rayft.serve.engine import GenerationEngine

    merged = tmp_path / "merged"
    assert main(["merge", str(ia3_dir), "--out", str(merged), "--base", tiny_model_path]) == 0
    with_adapter = GenerationEngine(tiny_model_path).generate([_req()], "ia3", ia3_dir)[0].texts[0]
    assert GenerationEngine(str(merged)).generate([_req()])[0].texts[0] == with_adapter
