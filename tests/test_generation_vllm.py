"""`generation.engine: vllm`, for real: vLLM's CPU build (.venv-vllm) in Ray actors answering for
rayft's evaluation, preference pairs and teacher data, on the embedded model and a LoRA adapter
trained here; on one node and on a local multi-node cluster (`ray start` head + two 1-CPU nodes on
127.0.0.1: one engine per node).

Marked `vllm` and skipped unless `make setup-vllm` has built .venv-vllm (or RAYFT_VLLM_PYTHON names
its python); `make test-vllm` runs it, and so does CI (.ci/run). The engine choice and the config
checks that need no vLLM are in tests/test_generation_engine.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from serve_helpers import QUESTION, train_adapter

VLLM_PYTHON = Path(os.environ.get("RAYFT_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python")).absolute()
pytestmark = [pytest.mark.vllm, pytest.mark.ray, pytest.mark.skipif(
    not VLLM_PYTHON.is_file(), reason=f"no vLLM environment at {VLLM_PYTHON} (build it with `make setup-vllm`)")]
MODEL = "builtin:smollm2-135m-instruct"
ANSWER = "Blue whales sing at dawn."
DEMO = REPO / "rayft" / "demo" / "extract_orders.jsonl"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from rayft.models.loader import resolve_model

    return train_adapter(resolve_model(MODEL), ANSWER, tmp_path_factory.mktemp("whale") / "whale", lr=2e-3, steps=30)


def _config(tmp_path: Path, engine: str, adapter: Path, **generation) -> Path:
    config = tmp_path / f"eval-{engine}.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": MODEL}, "data": {"path": str(DEMO), "template": "alpaca", "eval_split": 0.2, "seed": 3},
        "eval": {"num_examples": 24, "max_new_tokens": 48, "models": {"whale": str(adapter)}, "perplexity": False},
        "generation": {"engine": engine, "vllm_python": str(VLLM_PYTHON), **generation},
        "storage": {"path": str(tmp_path / "runs")}}))
    return config


def _eval(config: Path, out: Path, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, "-m", "rayft", "eval", str(config), "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "eval.json").read_text())


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, adapter):
    """`rayft eval` of base + the adapter on the demo's held-out rows, once per engine (one node)."""
    tmp = tmp_path_factory.mktemp("evals")
    return {engine: _eval(_config(tmp, engine, adapter, cpus_per_engine=2), tmp / engine) for engine in ("hf", "vllm")}


def _answers(results: dict, label: str) -> list[str]:
    return [row[label]["answer"] for row in results["examples"]]


def test_both_engines_give_the_same_greedy_answers_and_metrics(evaluated):
    hf, vllm = evaluated["hf"], evaluated["vllm"]
    assert any("written by vLLM: 1 engine(s) on 1 node(s)" in note for note in vllm["notes"])
    assert not any("vLLM" in note for note in hf["notes"])
    for label in ("base", "whale"):
        a, b = _answers(hf, label), _answers(vllm, label)
        assert len(a) == len(b) == 24
        same = sum(x == y for x, y in zip(a, b))
        assert same >= 20, f"{label}: only {same} of 24 greedy answers identical across engines"
    rows = {(e, r["model"]): r for e in evaluated for r in evaluated[e]["metrics"]}
    for label in ("base", "whale"):
        for metric in ("exact_match", "rouge_l"):
            interval = rows[("hf", label)]["intervals"][metric]  # {n, low, high}: the 95% bootstrap interval
            assert interval["low"] - 1e-9 <= rows[("vllm", label)][metric] <= interval["high"] + 1e-9, (label, metric)


def test_the_adapter_answers_as_trained_on_vllm(adapter, ray_cluster):
    """The LoRA request path: the adapter's trained answer, and the base's different one."""
    from rayft.generation.vllm_pool import VLLMPool
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.schema.generation import GenerationConfig
    from rayft.schema.sections import ModelConfig

    path = resolve_model(MODEL)
    tokenizer = load_tokenizer(path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                           add_generation_prompt=True)
    with VLLMPool(path, ModelConfig(name=MODEL), GenerationConfig(engine="vllm", vllm_python=str(VLLM_PYTHON),
                                                                  cpus_per_engine=2), [str(adapter)]) as pool:
        tuned = pool.answer(tokenizer, [prompt], adapter=str(adapter), max_new_tokens=16)[0][0].text
        base = pool.answer(tokenizer, [prompt], max_new_tokens=16)[0][0].text
        sampled = pool.answer(tokenizer, [prompt] * 2, samples=3, do_sample=True, temperature=1.0, seed=7,
                              max_new_tokens=16)
        again = pool.answer(tokenizer, [prompt] * 2, samples=3, do_sample=True, temperature=1.0, seed=7,
                            max_new_tokens=16)
    assert tuned.startswith(ANSWER) and not base.startswith(ANSWER)
    assert [[g.text for g in s] for s in sampled] == [[g.text for g in s] for s in again]  # seeded
    assert len({g.text for g in sampled[0]}) > 1  # three samples, not one repeated
    assert [g.text for g in sampled[0]] != [g.text for g in sampled[1]]  # each prompt its own seed


def test_pairs_and_teacher_data_on_vllm(tmp_path, adapter):
    """`rayft data preference` (on-policy: 3 samples + greedy, ROUGE-L) and `rayft data generate`
    (self-instruct, then answers) with generation.engine vllm: files written, counts that add up."""
    from rayft.cli import main

    config = _config(tmp_path, "vllm", adapter, cpus_per_engine=2)
    pairs = tmp_path / "pairs.jsonl"
    assert main(["data", "preference", str(config), "--out", str(pairs), "--limit", "12", "--samples", "3",
                 "--score", "rouge_l", "--greedy"]) == 0
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert rows and all(r["chosen"] != r["rejected"] for r in rows)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("What is the capital of France?\nName three primary colors.\nGive one tip for staying healthy.\n"
                     "What does a thermometer measure?\nWho wrote Romeo and Juliet?\nWhat is photosynthesis?\n")
    raw = yaml.safe_load(config.read_text())
    raw["generation"]["teacher"] = {"prompts": str(seeds), "max_new_tokens": 128,
                                    "self_instruct": {"num_instructions": 10, "examples_per_prompt": 3}}
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "taught.jsonl"
    assert main(["data", "generate", str(config), "--out", str(out)]) == 0
    stats = json.loads((tmp_path / "taught.jsonl.stats.json").read_text())
    made, answered = stats["instructions"], stats["answers"]
    drops = ("empty", "cut_at_limit", "wrong_format", "rejected_by_endpoint")
    assert made["asked"] == 10 == sum(made[k] for k in drops) + made["duplicates"] + made["kept"]
    assert answered["questions"] == made["kept"] == sum(answered[k] for k in drops) + \
        sum(answered["filtered"].values()) + answered["duplicates"] + answered["written"]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written and all(r["provenance"]["engine"] == "vllm" and r["completion"] for r in written)



def test_evaluation_spreads_over_the_nodes(cluster, adapter, evaluated, tmp_path):
    """On the multi-node cluster: one engine per node (num_engines auto, 1 CPU each), the same
    answers as the single-node run."""
    config = _config(tmp_path, "vllm", adapter)
    results = _eval(config, tmp_path / "mn", env={**cluster.env, "RAY_ADDRESS": cluster.address})
    assert any("written by vLLM: 2 engine(s) on 2 node(s)" in note for note in results["notes"])
    for label in ("base", "whale"):
        same = sum(x == y for x, y in zip(_answers(results, label), _answers(evaluated["vllm"], label)))
        assert same >= 22, f"{label}: {same} of 24 answers as on one node"


def test_grpo_then_ppo_roll_out_on_vllm_with_the_policy_of_each_step(tmp_path, ray_cluster):
    """A grpo stage then a ppo stage (starting from grpo's adapter, kept as PPO's frozen reference
    adapter) with generation.engine vllm: each stage starts one engine actor beside its training
    worker; at each optimizer step rank 0 saves the policy's LoRA adapter (only the trained one) and
    the engine samples that step's completions from it (one seeded sample per prompt)."""
    from rayft.config.load import load_pipeline
    from rayft.train.launch import run_pipeline

    overrides = [f"model.name={MODEL}", f"data.path={DEMO}", "data.template=alpaca", "data.eval_split=0",
                 "stages=[{type: grpo, rewards: [rayft.rewards:length_penalty], num_generations: 2, "
                 "max_completion_length: 12}, {type: ppo, rewards: [rayft.rewards:length_penalty], "
                 "max_new_tokens: 12}]", "training.max_steps=2", "training.batch_size=2",
                 "training.logging_steps=1", "eval.enabled=false", "scaling.num_workers=1",
                 "generation.engine=vllm", f"generation.vllm_python={VLLM_PYTHON}", "generation.cpus_per_engine=1",
                 f"storage.path={tmp_path}", "run_name=rl-vllm", "tracking.tensorboard=false"]
    result = run_pipeline(load_pipeline(None, overrides))
    for stage in ("grpo", "ppo"):
        summary = json.loads((result.run_dir / stage / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == 2, stage
        rollouts = summary["rollouts"]
        assert rollouts["engine"] == "vllm" and rollouts["engines"] == 1, stage
        assert rollouts["adapters_saved"] == 2 == rollouts["rollouts"], stage  # steps 0/1 (ppo: 0/1), once each
        assert rollouts["completions"] == 2 * 2, stage  # batch 2 per step
        folder = result.run_dir / stage / "rollout_adapters"
        assert sorted(p.name for p in folder.iterdir()) == ["step-1"], stage  # the step before is removed
        saved = json.loads((folder / "step-1" / "adapter_config.json").read_text())
        assert saved["r"] == 16 and (folder / "step-1" / "adapter_model.safetensors").is_file(), stage
    ppo = json.loads((result.run_dir / "ppo" / "summary.json").read_text())
    assert [h["step"] for h in ppo["ppo_history"]] == [1, 2] and ppo["init_adapter"].endswith("grpo/adapter")
