"""`rayft eval CONFIG` on the tiny model: base vs an adapter vs a merged model, teacher-forced
scores (answer loss / perplexity, implicit DPO reward, reward-model accuracy), report.md and a
self-contained report.html (parsed; its embedded PNGs decoded), MLflow logging, and generation
spread over Ray workers giving the same answers as in-process."""

from __future__ import annotations

import base64
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import DEMO_DATA, write_jsonl
from rayft.config.load import load_pipeline


def _random_lora(tiny_model_path: str, out: Path, seed: int, task_type: str = "CAUSAL_LM") -> Path:
    """A LoRA adapter with non-zero random weights (so the model's answers change), saved as PEFT."""
    import torch
    from peft import LoraConfig, get_peft_model

    from rayft.schema.sections import ModelConfig
    from rayft.models.loader import load_causal_lm, load_tokenizer

    torch.manual_seed(seed)
    if task_type == "SEQ_CLS":
        from rayft.models.reward_model import load_reward_model

        tok = load_tokenizer(tiny_model_path)
        base = load_reward_model(tiny_model_path, ModelConfig(dtype="float32"), pad_token_id=tok.pad_token_id)
    else:
        base = load_causal_lm(tiny_model_path, ModelConfig(dtype="float32"), False)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", task_type=task_type,
                                            init_lora_weights=False))
    model.save_pretrained(out)
    load_tokenizer(tiny_model_path).save_pretrained(out)
    return out


class _Checker(HTMLParser):
    """Collects tags and image sources; fails on unbalanced block tags."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.seen: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.seen.add(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()


def _check_html(path: Path) -> _Checker:
    checker = _Checker()
    checker.feed(path.read_text())
    checker.close()
    assert checker.stack == [], f"unclosed tags: {checker.stack}"
    from PIL import Image

    for src in checker.images:
        assert src.startswith("data:image/png;base64,"), "report.html must be self-contained"
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    return checker


def test_eval_config_base_adapter_and_merged_model(tmp_path, tiny_model_path):
    from rayft.cli import main

    adapter = _random_lora(tiny_model_path, tmp_path / "tuned", seed=1)

    merged = tmp_path / "merged"
    from peft import PeftModel

    from rayft.schema.sections import ModelConfig
    from rayft.models.loader import load_causal_lm, load_tokenizer

    PeftModel.from_pretrained(load_causal_lm(tiny_model_path, ModelConfig(dtype="float32"), False),
                              str(adapter)).merge_and_unload().save_pretrained(merged)
    load_tokenizer(tiny_model_path).save_pretrained(merged)
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {{name: builtin:tiny-random}}\n"
                      f"data: {{path: {DEMO_DATA}, template: alpaca, eval_split: 6, max_length: 160}}\n"
                      f"eval: {{num_examples: 6, max_new_tokens: 8, batch_size: 4,\n"
                      f"        models: {{tuned: {adapter}, merged: {merged}}}}}\n")
    out = tmp_path / "out"
    assert main(["eval", str(config), "--out", str(out)]) == 0
    result = json.loads((out / "eval.json").read_text())
    rows = {r["model"]: r for r in result["metrics"]}
    assert set(rows) == {"base", "tuned", "merged"}
    for row in rows.values():
        assert row["n"] == 6 and row["loss"] > 0 and math.isclose(row["perplexity"], math.exp(row["loss"]), rel_tol=1e-6)
    assert rows["tuned"]["loss"] != rows["base"]["loss"], "the adapter must change the scores"
    # The merged model is the adapter folded into the base: same answers, same loss.
    assert math.isclose(rows["tuned"]["loss"], rows["merged"]["loss"], rel_tol=1e-3)
    answers = [e for e in result["examples"]]
    assert [e["tuned"]["answer"] for e in answers] == [e["merged"]["answer"] for e in answers]
    assert [e["tuned"]["answer"] for e in answers] != [e["base"]["answer"] for e in answers]
    assert (out / "config.yaml").is_file() and "| tuned |" in (out / "report.md").read_text()
    checker = _check_html(out / "report.html")
    assert {"table", "pre", "h2"} <= checker.seen


def test_answer_loss_matches_transformers(tiny_model_path, tiny_tokenizer):
    """rayft's answer loss equals the loss transformers computes from the same labels."""
    import torch
    from datasets import Dataset

    from rayft.schema.sections import ModelConfig
    from rayft.metrics.teacher_forced import answer_loss
    from rayft.models.loader import load_causal_lm

    model = load_causal_lm(tiny_model_path, ModelConfig(dtype="float32"), False).eval()
    ids = [tiny_tokenizer("Question: what is two plus two? Answer: four")["input_ids"]]
    labels = [[-100] * 8 + ids[0][8:]]
    ours = answer_loss(model, Dataset.from_dict({"input_ids": ids, "labels": labels}))
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(ids), labels=torch.tensor(labels)).loss.item()
    assert math.isclose(ours["loss"], theirs, rel_tol=1e-5)
    assert ours["answer_tokens"] == len(ids[0]) - 8


def test_implicit_dpo_and_pairwise_accuracy_known_values():
    from rayft.metrics.teacher_forced import implicit_dpo_rewards, pairwise_accuracy

    r = implicit_dpo_rewards(0.5, [-1.0, -2.0], [-3.0, -1.0], [-2.0, -2.0], [-2.0, -2.0])
    # chosen rewards 0.5, 0; rejected -0.5, 0.5 -> margins 1.0, -0.5
    assert r == {"accuracy": 0.5, "margin": 0.25, "chosen": 0.25, "rejected": 0.0, "n": 2,
                 "accuracy_interval": [0.0, 1.0], "margin_interval": [-0.5, 1.0]}
    found = pairwise_accuracy([2.0, 1.0, 0.0], [1.0, 3.0, -1.0])
    assert {k: found[k] for k in ("accuracy", "margin", "n")} == {"accuracy": 2 / 3, "margin": 0.0, "n": 3}
    low, high = found["accuracy_interval"]
    assert 0.0 <= low < 2 / 3 < high <= 1.0  # 3 pairs: a wide interval, and it says so


def test_a_bootstrap_interval_narrows_with_more_rows_and_covers_the_mean():
    from rayft.metrics.text import bootstrap_interval

    small = bootstrap_interval([1.0, 0.0] * 10)
    large = bootstrap_interval([1.0, 0.0] * 500)
    assert small["n"] == 20 and large["n"] == 1000
    assert small["low"] < large["low"] < 0.5 < large["high"] < small["high"]
    weighted = bootstrap_interval([1.0, 3.0], weights=[3, 1])  # a token-weighted mean loss: (3 + 3) / 4
    assert weighted["low"] <= 1.5 <= weighted["high"]


def test_preference_eval_implicit_reward_and_reward_model(tmp_path, tiny_model_path):
    """On preference pairs: each model gets an implicit DPO reward vs the base; the reward model
    named in eval.reward_model gets its pairwise accuracy."""
    from rayft.cli import main

    pairs = [{"prompt": f"Name the colour number {i}.", "chosen": "blue", "rejected": f"I refuse {i} times"}
             for i in range(24)]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    adapter = _random_lora(tiny_model_path, tmp_path / "tuned", seed=2)
    reward = _random_lora(tiny_model_path, tmp_path / "reward", seed=3, task_type="SEQ_CLS")
    config = tmp_path / "pref.yaml"
    config.write_text(f"model: {{name: builtin:tiny-random}}\n"
                      f"stages: [{{type: dpo, data: {{path: {data}, eval_split: 8, max_length: 64}}}}]\n"
                      f"eval: {{num_examples: 8, max_new_tokens: 4, models: {{tuned: {adapter}}}, "
                      f"reward_model: {reward}}}\n")
    out = tmp_path / "out"
    assert main(["eval", str(config), "--out", str(out)]) == 0
    result = json.loads((out / "eval.json").read_text())
    dpo = result["teacher_forced"]["tuned"]["dpo"]
    assert 0.0 <= dpo["accuracy"] <= 1.0 and dpo["margin"] != 0.0
    assert "dpo" not in result["teacher_forced"]["base"]  # the base is the reference
    rm = result["reward_models"]["eval.reward_model"]
    assert rm["n"] == 8 and 0.0 <= rm["accuracy"] <= 1.0
    assert "Reward models on held-out pairs" in (out / "report.md").read_text()
    _check_html(out / "report.html")


def _reward_only_run(tmp_path: Path, tiny_model_path: str, eval_split: int) -> Path:
    """A run folder as `rayft train` leaves it after a config with one reward stage: config.yaml,
    reward/summary.json (completed) and reward/adapter (a random SEQ_CLS LoRA with its score head)."""
    from rayft.records.rundir import write_summary

    pairs = [{"prompt": f"Is {i} a small number?", "chosen": f"Yes, {i} is small.",
              "rejected": "Numbers are a social construct and I will not answer."} for i in range(20)]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    run = tmp_path / "runs" / "rm"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"model: {{name: builtin:tiny-random}}\nrun_name: rm\nstorage: {{path: {tmp_path / 'runs'}}}\n"
        f"stages: [{{type: reward, data: {{path: {data}, eval_split: {eval_split}, max_length: 64}}}}]\n"
        f"eval: {{num_examples: 6}}\n")
    _random_lora(tiny_model_path, run / "reward" / "adapter", seed=5, task_type="SEQ_CLS")
    write_summary(run / "reward", status="completed", global_step=4, eval_accuracy=0.5)
    return run


def test_reward_only_run_is_evaluated_not_refused(tmp_path, tiny_model_path):
    """`rayft eval RUN` on a run whose only stage is a reward model (what `rayft train` calls after
    training): exit 0, no text generated, the reward model's held-out accuracy and margin in
    eval.json, report.md, report.html (with the chosen-vs-rejected histogram) and the stage's
    summary.json. It used to stop with "has no completed stage to evaluate"."""
    from rayft.cli import main

    run = _reward_only_run(tmp_path, tiny_model_path, eval_split=8)
    assert main(["eval", str(run)]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["metrics"] == [] and result["examples"] == []  # nothing generated
    rm = result["reward_models"]["reward"]
    chosen, rejected = rm["scores"]["chosen"], rm["scores"]["rejected"]
    # every held-out pair: eval.num_examples (6) caps generation, not scoring (issue 31: a capped
    # accuracy disagreed with TRL's own evaluation of the same stage on all its held-out pairs)
    assert rm["n"] == len(chosen) == len(rejected) == 8
    margins = [c - r for c, r in zip(chosen, rejected)]
    assert rm["accuracy"] == sum(m > 0 for m in margins) / 8
    assert math.isclose(rm["margin"], sum(margins) / 8, rel_tol=1e-9) and rm["margin"] != 0.0
    low, high = rm["accuracy_interval"]
    assert low <= rm["accuracy"] <= high
    summary = json.loads((run / "reward" / "summary.json").read_text())
    assert summary["heldout_accuracy"] == rm["accuracy"] and summary["heldout_pairs"] == 8
    assert summary["status"] == "completed" and summary["eval_accuracy"] == 0.5  # training's figures kept
    report = (run / "report.md").read_text()
    assert "## Reward models on held-out pairs" in report and "Held-out evaluation" not in report
    assert f"| reward | 8 | {100 * rm['accuracy']:.1f} [" in report
    assert Path(rm["histogram"]).is_file() and "eval_plots/reward_reward.png" in report
    checker = _check_html(run / "report.html")
    assert len(checker.images) == 1  # the histogram, embedded
    assert "heldout_accuracy" in (run / "report.html").read_text()


def test_reward_stage_without_held_out_pairs_is_a_note(tmp_path, tiny_model_path, capsys):
    """With `eval_split: 0` there is nothing to score: the run still evaluates (exit 0) and the
    report says why the reward model has no held-out figures."""
    from rayft.cli import main

    run = _reward_only_run(tmp_path, tiny_model_path, eval_split=0)
    assert main(["eval", str(run)]) == 0
    assert json.loads((run / "eval.json").read_text())["reward_models"] == {}
    assert "reward stage 'reward' not scored" in (run / "report.md").read_text()
    assert "data.eval_split" in capsys.readouterr().out


def test_benchmark_style_answers_in_the_report(tmp_path, tiny_model_path):
    """`eval.answer_pattern` on GSM8K-shaped rows: each example records the answer extracted from
    the reference and from the generation (None where the tiny model gives none), exact match is
    computed on those, and report.md / report.html show them beside the raw texts."""
    from rayft.cli import main

    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}.\n#### {2 * i:,}"}
            for i in range(998, 1004)]
    data = write_jsonl(tmp_path / "gsm.jsonl", rows)
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {{name: builtin:tiny-random}}\ndata: {{path: {data}, eval_split: 4}}\n"
                      f"eval: {{num_examples: 4, max_new_tokens: 4, answer_pattern: '#### (\\S+)', "
                      f"normalize: [numbers, strip], perplexity: false}}\n")
    out = tmp_path / "out"
    assert main(["eval", str(config), "--out", str(out)]) == 0
    result = json.loads((out / "eval.json").read_text())
    per_example = [e["base"] for e in result["examples"]]
    assert all(e["reference_answer"] == f"{int(e['reference_answer'].replace(',', '')):,}" for e in per_example)
    assert {e["reference_answer"] for e in per_example} <= {f"{2 * i:,}" for i in range(998, 1004)}
    for e in per_example:
        assert e["exact_match"] == float(e["answer"] is not None and
                                         e["answer"].replace(",", "").rstrip(".") == e["reference_answer"].replace(",", ""))
    report = (out / "report.md").read_text()
    assert f"-> answer `{per_example[0]['reference_answer']}`" in report
    assert "answer: " + per_example[0]["reference_answer"] in (out / "report.html").read_text()
    _check_html(out / "report.html")


def test_eval_config_errors_name_the_field(tmp_path, capsys):
    from rayft.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text(f"model: {{name: builtin:tiny-random}}\ndata: {{path: {DEMO_DATA}, eval_split: 4}}\n"
                      f"eval: {{models: {{tuned: {tmp_path / 'missing'}}}}}\n")
    assert main(["eval", str(config)]) == 2
    assert "eval.models.tuned" in capsys.readouterr().err


def test_plots_and_html_of_a_run_directory(tmp_path, tiny_model_path):
    """A run folder with a finished SFT and PPO stage: loss / lr / reward / KL plots are written and
    embedded in report.html even without the comparison (eval disabled)."""
    from rayft.eval.html_report import write_html_report
    from rayft.records.plots import plot_training
    from rayft.records.rundir import write_summary

    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", "stages=[{type: sft}, {type: ppo, rewards: "
                                  "['rayft.rewards:short_answer'], training: {max_steps: 2}}]"])
    sft = {"loss_history": [[1, 2.0], [2, 1.5], [3, 1.2]], "eval_loss_history": [[3, 1.4]],
           "lr_history": [[1, 1e-4], [2, 2e-4], [3, 1e-4]]}
    ppo = {"ppo_history": [{"step": 1, "reward": 0.1, "kl": 0.0}, {"step": 2, "reward": 0.4, "kl": 0.3}]}
    for name, metrics in (("sft", sft), ("ppo", ppo)):
        plots = plot_training(metrics, tmp_path / name / "plots")
        write_summary(tmp_path / name, status="completed", global_step=3, plots=[str(p) for p in plots])
    assert sorted(p.name for p in (tmp_path / "sft" / "plots").iterdir()) == ["loss.png", "lr.png"]
    assert sorted(p.name for p in (tmp_path / "ppo" / "plots").iterdir()) == ["kl.png", "reward.png"]
    checker = _check_html(write_html_report(tmp_path, loaded, None))
    assert len(checker.images) == 4


@pytest.mark.ray
def test_generation_spread_over_ray_workers_matches_in_process(ray_cluster, tmp_path, tiny_model_path, tiny_tokenizer):
    from rayft.schema.sections import EvalConfig, ModelConfig
    from rayft.generation.parallel import generate_answers

    prompts = [f"Count to {i}:" for i in range(7)]
    one = generate_answers("base", tiny_model_path, None, ModelConfig(dtype="float32"), tiny_tokenizer, prompts,
                           EvalConfig(max_new_tokens=6, batch_size=3))
    two = generate_answers("base", tiny_model_path, None, ModelConfig(dtype="float32"), tiny_tokenizer, prompts,
                           EvalConfig(max_new_tokens=6, batch_size=3, num_workers=2))
    assert [g.text for g in one] == [g.text for g in two] and len(two) == 7
