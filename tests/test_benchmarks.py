"""`eval.benchmarks`: lm-evaluation-harness tasks checked before any model loads, rayft's offline task
definitions read by lm-eval itself, and rayft's figures for the base model and an adapter equal to
lm-eval's own command line on the same task files and limit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_DATA, REPO
from rayft.core.errors import UserError
from rayft.metrics.benchmarks import plan_tasks
from rayft.schema.benchmarks import BenchmarksConfig

MMLU = REPO.parent / "shared" / "data" / "mmlu"
needs_mmlu = pytest.mark.skipif(not (MMLU / "test").is_dir(), reason=f"no MMLU copy at {MMLU} (../shared/data/mmlu)")


def _plan(tmp_path, **fields):
    return plan_tasks(BenchmarksConfig(**fields), tmp_path / "work")


def test_unknown_task_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(UserError, match=r"'hellaswagg' is not an lm-evaluation-harness task.*did you mean hellaswag"):
        _plan(tmp_path, tasks=["hellaswagg"])


def test_shipped_tasks_name_the_data_they_need(tmp_path):
    with pytest.raises(UserError, match=r"eval.benchmarks.data_dir: rayft_mmlu reads local data.*mmlu/test"):
        _plan(tmp_path, tasks=["rayft_mmlu"])
    with pytest.raises(UserError, match=r"rayft_gsm8k: .*gsm8k/test.jsonl does not exist; get it from .*grade-school-math"):
        _plan(tmp_path, tasks=["rayft_gsm8k"], data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"rayft_mmlu_no_such_subject: .*mmlu/test/no_such_subject_test.csv does not"):
        _plan(tmp_path, tasks=["rayft_mmlu_no_such_subject"], data_dir=str(tmp_path))


def test_a_hub_task_offline_is_refused_before_any_model_loads(tmp_path, monkeypatch):
    """lm-eval's own mmlu_anatomy reads cais/mmlu from the hub; offline (forced here, and true on this
    machine) and not cached, the message names the task and rayft's offline copy."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError, match=r"mmlu_anatomy reads the hub dataset cais/mmlu.*rayft_mmlu"):
        _plan(tmp_path, tasks=["mmlu_anatomy"])


def test_a_task_yaml_file_is_indexed_by_path(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"q": f"{i}+1?", "choices": [str(i + 1), str(i)], "gold": 0}) + "\n"
                            for i in range(5)))
    task = tmp_path / "tasks" / "my_qa.yaml"
    task.parent.mkdir()
    task.write_text(yaml.safe_dump({"task": "my_qa", "dataset_path": "json",
                                    "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
                                    "output_type": "multiple_choice", "doc_to_text": "{{q}}", "doc_to_choice": "choices",
                                    "doc_to_target": "gold", "metric_list": [{"metric": "acc"}]}))
    plan = _plan(tmp_path, tasks=[str(task)])
    assert plan.tasks == ["my_qa"] and str(task.parent) in plan.include and not plan.include_defaults
    with pytest.raises(UserError, match="no such task file"):
        _plan(tmp_path, tasks=[str(tmp_path / "missing.yaml")])


def test_every_shipped_task_loads_its_local_files_in_lm_eval(tmp_path):
    """rayft's offline definitions of ARC, HellaSwag, TruthfulQA and GSM8K over small files in the public
    datasets' columns: lm-eval builds each task and renders its prompts and targets from them."""
    from lm_eval.tasks import TaskManager

    root = tmp_path / "bench"
    arc = {"id": "a1", "question": "Which is a liquid?", "choices": {"text": ["ice", "water", "steam"],
                                                                      "label": ["A", "B", "C"]}, "answerKey": "B"}
    hella = {"ind": 1, "activity_label": "Cooking", "ctx_a": "A man cuts onions.", "ctx_b": "he", "ctx": "",
             "endings": ["cries.", "flies [title] away.", "sings.", "sleeps."], "source_id": "x", "split": "val",
             "split_type": "indomain", "label": "0"}
    tqa = {"question": "Is the earth flat?", "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
           "mc2_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]}}
    gsm = {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}
    for rel, row in (("arc/ARC-Easy/test.jsonl", arc), ("arc/ARC-Challenge/test.jsonl", arc),
                     ("hellaswag/validation.jsonl", hella), ("truthfulqa/validation.jsonl", tqa),
                     ("gsm8k/test.jsonl", gsm), ("gsm8k/train.jsonl", gsm)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(row) + "\n")
    names = ["rayft_arc_easy", "rayft_arc_challenge", "rayft_hellaswag", "rayft_truthfulqa_mc1", "rayft_gsm8k"]
    plan = _plan(tmp_path, tasks=names, data_dir=str(root))
    loaded = TaskManager(include_path=plan.include, include_defaults=False).load(names)["tasks"]
    tasks = {name.split(":")[-1] if isinstance(name, str) else name: t for name, t in loaded.items()}
    found = {}
    for key, task in tasks.items():
        doc = next(iter(task.eval_docs))
        found[task.config.task] = (task.doc_to_text(doc), task.doc_to_target(doc), task.doc_to_choice(doc)
                                   if task.OUTPUT_TYPE == "multiple_choice" else None)
    assert found["rayft_arc_easy"] == ("Question: Which is a liquid?\nAnswer:", 1, ["ice", "water", "steam"])
    text, target, choices = found["rayft_hellaswag"]
    assert text.startswith("Cooking: A man cuts onions. He") and target == 0 and choices[1] == "flies. away."
    text, target, choices = found["rayft_truthfulqa_mc1"]
    assert text.endswith("\n\nQ: Is the earth flat?\nA:") and "Barcelona, Spain.\n\nQ:" in text
    assert target == 0 and choices == ["No.", "Yes."]
    assert found["rayft_gsm8k"][:2] == ("Question: What is 2 + 3?\nAnswer:", "2 + 3 = 5\n#### 5")


@needs_mmlu
def test_mmlu_subjects_and_group_come_from_the_data_folder(tmp_path):
    plan = _plan(tmp_path, tasks=["rayft_mmlu_anatomy", "rayft_mmlu"], data_dir=str(MMLU.parent))
    written = {p.stem for p in Path(plan.include[0]).glob("*.yaml")}
    assert len(written) == 58 and {"rayft_mmlu", "rayft_mmlu_anatomy", "rayft_mmlu_virology"} <= written
    with pytest.raises(UserError, match=r"rayft_mmlu_anatomyy: .*does not exist \(subjects there include anatomy\)"):
        _plan(tmp_path, tasks=["rayft_mmlu_anatomyy"], data_dir=str(MMLU.parent))


def _random_adapter(model_path: str, out: Path) -> Path:
    """A LoRA adapter with random (non-zero) weights: it changes the model's answers, as a trained one would."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=256, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    peft.save_pretrained(out)
    return out


@pytest.mark.embedded
@pytest.mark.ray
@needs_mmlu
def test_rayft_figures_equal_lm_eval_s_command_line_for_base_and_adapter(ray_cluster, tmp_path, capsys):
    """`rayft eval CONFIG --benchmarks ... --benchmarks-only` on the embedded model and an adapter (two
    MMLU subjects, 20 questions each), then lm-eval's own command line on the same task files, limit and
    batch size: every figure equal to the last digit."""
    from rayft.cli import main
    from rayft.models.loader import resolve_model

    base = resolve_model("builtin:smollm2-135m-instruct", None)
    adapter = _random_adapter(base, tmp_path / "adapter")
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": "builtin:smollm2-135m-instruct"}, "data": {"path": str(DEMO_DATA)},
        "stages": [{"name": "sft", "type": "sft"}], "storage": {"path": str(tmp_path / "runs")},
        "eval": {"models": {"random-lora": str(adapter)},
                 "benchmarks": {"data_dir": str(MMLU.parent), "batch_size": 4}}}))
    out = tmp_path / "out"
    assert main(["eval", str(config), "--out", str(out), "--benchmarks", "rayft_mmlu_anatomy,rayft_mmlu_astronomy",
                 "--limit", "20", "--benchmarks-only"]) == 0
    figures = json.loads((out / "eval.json").read_text())["benchmarks"]
    assert set(figures["models"]) == {"base", "random-lora"} and len(figures["rows"]) == 2
    printed = capsys.readouterr().out
    assert "benchmarks (lm-evaluation-harness" in printed
    report = (out / "report.md").read_text()
    assert "## Benchmarks" in report and "first 20 questions" in report
    assert "Benchmarks" in (out / "report.html").read_text()
    mine = {label: json.loads(Path(m["file"]).read_text()) for label, m in figures["models"].items()}
    assert mine["random-lora"]["command"].count(f"peft={adapter}") == 1
    samples = {label: [r["tasks"][t]["metrics"]["acc"]["samples"] for t in sorted(r["tasks"])] for label, r in mine.items()}
    assert samples["base"] != samples["random-lora"], "the adapter must change the answers"
    lm_eval = Path(sys.executable).with_name("lm_eval")
    for label, result in mine.items():
        command = result["command"].split()
        assert command[0] == "lm_eval"
        reference = tmp_path / f"lm_eval-{label}"
        done = subprocess.run([str(lm_eval), *command[1:], "--output_path", str(reference)], capture_output=True,
                              text=True, timeout=600, env={**_env(), "HF_DATASETS_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        theirs = json.loads(next(reference.rglob("results_*.json")).read_text())["results"]
        for task, found in result["tasks"].items():
            ours = found["metrics"]["acc"]
            assert ours["value"] == theirs[task]["acc,none"], (label, task)
            assert ours["stderr"] == theirs[task]["acc_stderr,none"], (label, task)
    row = figures["rows"][0]["models"]["random-lora"]
    assert {"delta", "delta_stderr", "forgetting"} <= set(row)


def _env():
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}


def test_rayft_train_refuses_a_misspelt_benchmark_before_training(tmp_path, capsys):
    """A bad task name found after an hour of training would lose the hour: `rayft train` checks
    eval.benchmarks first (exit 2, no run directory)."""
    from rayft.cli import main

    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": "builtin:tiny-random"}, "data": {"path": str(DEMO_DATA)}, "stages": [{"type": "sft"}],
        "storage": {"path": str(tmp_path / "runs")}, "eval": {"benchmarks": ["arc_easyy"]},
        "run_name": "never"}))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "'arc_easyy' is not an lm-evaluation-harness task" in err and "arc_easy" in err
    assert not (tmp_path / "runs" / "never").exists()


def test_forgetting_needs_more_than_one_paired_standard_error():
    """One question of 40 lost is a change of exactly one paired stderr: not flagged; four are."""
    from rayft.eval.benchmarks import compare_to_base

    def result(wrong: set[int]) -> dict:
        samples = [[i, 0.0 if i in wrong else 1.0] for i in range(40)]
        value = sum(s for _, s in samples) / 40
        return {"tasks": {"t": {"alias": "t", "metrics": {"acc": {
            "value": value, "stderr": 0.07, "higher_is_better": True, "n": 40, "samples": samples}}}}}

    rows = compare_to_base({"base": result(set()), "one": result({3}), "four": result({1, 2, 3, 4})}, "base")
    cells = rows[0]["models"]
    assert cells["one"]["delta"] == pytest.approx(-0.025) and cells["one"]["delta_stderr"] == pytest.approx(0.025)
    assert not cells["one"]["forgetting"] and cells["four"]["forgetting"]
