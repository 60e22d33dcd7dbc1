"""Memory before a run (rayft.compute.plan): the estimate's activation terms against what autograd
really keeps, the refusal of a stage that cannot fit before any worker starts (naming the knobs),
`rayft plan`, gradient checkpointing honoured on CPU workers, and the out-of-memory account."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import DEMO_DATA
from rayft.cli import main
from rayft.compute.memory import ModelShape
from rayft.compute.plan import layer_elements, plan_stage
from rayft.config.load import load_pipeline

GIB = 2**30


def _saved_elements(model, ids) -> int:
    """Elements of the tensors autograd saves for backward in one forward (parameters left out)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[tuple[int, int], int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values()) // 4  # fp32


@pytest.mark.parametrize("adapter", ["full", "lora", "lora-no-dropout"])
def test_activation_terms_match_what_autograd_keeps(adapter):
    """One decoder layer's kept elements per token, measured as the difference between a 3- and a
    2-layer Llama (the first layer of a LoRA model keeps less: its input needs no gradient)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    pipeline = load_pipeline(None, [f"adapter.type={'full' if adapter == 'full' else 'lora'}",
                                    f"adapter.dropout={0.0 if adapter == 'lora-no-dropout' else 0.05}"]).pipeline
    batch, length = 2, 96
    measured = []
    for layers in (2, 3):
        config = LlamaConfig(vocab_size=512, hidden_size=192, num_hidden_layers=layers, intermediate_size=512,
                             num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
                             attn_implementation="sdpa")
        model = LlamaForCausalLM(config)
        if adapter != "full":
            a = pipeline.adapter
            model = get_peft_model(model, LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout,
                                                     target_modules="all-linear", task_type="CAUSAL_LM"))
        model.train()
        measured.append(_saved_elements(model, torch.randint(0, 512, (batch, length))))
    per_layer = (measured[1] - measured[0]) / (batch * length)
    shape = ModelShape("test", 512, 192, 3, 512, 64, True, 6)
    estimated = layer_elements(shape, pipeline.adapter, "sdpa", length)
    assert abs(estimated - per_layer) / per_layer < 0.10, (estimated, per_layer)


def test_checkpointing_and_pairs_change_the_estimate_as_they_should():
    shape = ModelShape("SmolLM2-135M", 49152, 576, 30, 1536, 192, True, 9)
    base = ["stages=[{type: reward}]", "training.batch_size=8", "data.max_length=384", "scaling.num_workers=1"]
    off = plan_stage(load_pipeline(None, [*base, "training.gradient_checkpointing=false"]).pipeline, 0, shape)
    on = plan_stage(load_pipeline(None, base).pipeline, 0, shape)
    assert off.parts["activations"] > 10 * on.parts["activations"]  # 30 layers kept vs one, plus the inputs
    assert off.parts["logits"] == on.parts["logits"] == 0  # a reward model has a score head, no LM logits
    sft = plan_stage(load_pipeline(None, base[1:]).pipeline, 0, shape)
    # a pair stage runs chosen and rejected in one forward: twice the sequences of SFT's batch
    assert on.parts["activations"] == pytest.approx(2 * sft.parts["activations"], rel=0.3)
    halved = dict(on.knobs)["training.batch_size: 4 with training.grad_accum: 2 (the same global batch)"]
    assert halved < on.total


def test_default_checkpointing_is_honoured_on_cpu_workers():
    """TRL's default (on), non-reentrant; FSDP gets its own activation checkpointing instead."""
    from rayft.compute.training_args import training_kwargs
    from transformers import TrainingArguments

    pipeline = load_pipeline(None, []).pipeline
    kwargs = training_kwargs(pipeline.stages[0].training, output_dir="/tmp/x", on_gpu=False, has_eval=False)
    args = TrainingArguments(**kwargs)
    assert args.activation_checkpointing is True and args.use_cpu
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False}
    fsdp = load_pipeline(None, ["scaling.use_gpu=true", "training.strategy=fsdp"]).pipeline.stages[0].training
    fsdp_kwargs = training_kwargs(fsdp, output_dir="/tmp/x", on_gpu=True, has_eval=False)
    assert fsdp_kwargs["activation_checkpointing"] is False
    assert fsdp_kwargs["fsdp_config"]["activation_checkpointing"] is True


def test_a_stage_that_cannot_fit_is_refused_before_any_worker_starts(tmp_path, capsys):
    """2,048 rows a micro-batch of the tiny model's 49k-token vocabulary: hundreds of GiB of logits.
    The run stops on the driver (no Ray, no model in a worker), naming the estimate, the limit and
    the settings that would fit."""
    code = main(["train", str(_empty(tmp_path)), "--set", "model.name=builtin:tiny-random",
                 "--set", f"data.path={DEMO_DATA}", "--set", f"storage.path={tmp_path}",
                 "--set", "training.batch_size=2048", "--set", "run_name=huge", "--set", "scaling.num_workers=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "stage 'sft' needs about" in err and "per CPU worker, more than the" in err
    assert "training.batch_size: 1024 with training.grad_accum: 2" in err and "--force" in err
    summary = tmp_path / "huge" / "sft" / "summary.json"
    assert not (tmp_path / "huge" / "sft" / "ray").exists()  # no Ray Train run was started
    assert not summary.exists() or json.loads(summary.read_text()).get("status") != "running"


def test_rayft_plan_prints_each_part_and_says_whether_it_fits(tmp_path, capsys):
    args = ["plan", str(_empty(tmp_path)), "--set", "model.name=builtin:tiny-random", "--set", f"data.path={DEMO_DATA}",
            "--set", "scaling.num_workers=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stage 'sft' (sft), longest row" in out and "logits" in out and ": fits" in out
    assert main([*args, "--set", "training.batch_size=4096"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "data.max_length" in out


def test_the_out_of_memory_account_names_the_node_the_kill_and_the_knobs():
    """Ray 2.60's memory monitor's own wording (the raylet's OutOfMemoryError, shortened)."""
    from rayft.compute.memory import SHAPES
    from rayft.train.memory_plan import oom_message, out_of_memory

    ray_text = ("1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: 192.0.2.2, "
                "ID: 280a) was 7.61GB used / 23.54GB limit (0.323387)\nOOM kill reason: Memory usage 8751828992B "
                "exceeded threshold of 7203712000B (28.5% of 25276182528B limit)\nRay killed 1 worker(s) based on "
                "the killing policy\nConsidered workers: [\nSelected to kill: (Task: job ID=01000000, lease ID=00, "
                "task name=RayTrainWorker.__init__, required resources={}, pid=14150, actual memory used=4.90GB, "
                "worker ID=26e1)\n]\nTop 10 memory users: PID\tMEM(GB)\tCOMMAND\n14150\t4.90\tray::RayTrainWorker\n"
                "6988\t0.69\tpython -m pytest")
    error = RuntimeError("Training failed")
    error.worker_failures = {1: RuntimeError(ray_text)}
    assert out_of_memory(error) and not out_of_memory(RuntimeError("worker 0: killed by the test"))
    pipeline = load_pipeline(None, ["training.batch_size=64"]).pipeline
    plan = plan_stage(pipeline, 0, SHAPES["135M"], 4 * GIB, "test limit")
    text = oom_message(error, plan, retries=2)
    assert text.startswith("out of memory: the node's memory reached 8.2 GiB, over Ray's kill "
                           "threshold of 6.7 GiB (28.5% of 23.5 GiB), so Ray's memory monitor killed "
                           "RayTrainWorker.__init__ (pid 14150, 4.90 GB); the largest process then was "
                           "ray::RayTrainWorker (pid 14150, 4.90 GB).")
    assert f"was {plan.total / GIB:.1f} GiB per worker against 4.0 GiB (test limit)" in text
    assert "training.batch_size: 32 with training.grad_accum: 2" in text
    assert "tried 3 times (scaling.max_failures: 2) with the same settings" in text


@pytest.mark.ray
def test_a_run_killed_by_rays_memory_monitor_says_so_in_plain_words(tmp_path):
    """A real Ray head (its own, token auth) whose memory monitor kills above this machine's memory
    in use now + 2.5 GiB; a tiny-model SFT stage of 64 rows a micro-batch (about 5 GiB of logits over
    the 49k-token vocabulary) goes past it. The stage ends with rayft's account, not Ray's paragraph."""
    import subprocess
    import sys

    import psutil

    from ray_head import LocalRayHead

    memory = psutil.virtual_memory()
    threshold = min(0.9, (memory.total - memory.available + 2.5 * GIB) / memory.total)
    head = LocalRayHead.start(num_cpus=2, env={"RAY_memory_usage_threshold": f"{threshold:.3f}",
                                               "RAY_memory_monitor_refresh_ms": "100"})
    try:
        run = subprocess.run(
            [sys.executable, "-m", "rayft", "train", str(_empty(tmp_path)), "--address", head.gcs_address,
             "--set", "model.name=builtin:tiny-random", "--set", f"data.path={DEMO_DATA}",
             "--set", f"storage.path={tmp_path}", "--set", "run_name=oom", "--set", "scaling.num_workers=1",
             "--set", "training.batch_size=64", "--set", "training.max_steps=3", "--set", "eval.enabled=false"],
            env=head.env, capture_output=True, text=True, timeout=600)
    finally:
        head.stop()
    assert run.returncode == 1, run.stderr[-3000:]
    error = run.stderr.split("rayft: error: ", 1)[-1]
    assert error.startswith("stage 'sft' failed: out of memory: the node's memory reached"), run.stderr[-3000:]
    assert "over Ray's kill threshold" in error and "so Ray's memory monitor killed" in error
    assert "The estimate for this stage was" in error and "training.batch_size: 32" in error
    assert "Refer to the documentation" not in error  # Ray's generic paragraph is not the message
    summary = json.loads((tmp_path / "oom" / "sft" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failure"] == "out_of_memory"
    assert summary["error"] == error.split("\n(outputs of earlier stages")[0].removeprefix("stage 'sft' failed: ")


def _empty(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    return path
