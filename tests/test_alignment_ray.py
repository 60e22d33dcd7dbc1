"""The alignment stages on real 2-worker Ray Train runs of the tiny model. Several stages share one
`run_pipeline` call to amortise start-up: sft -> reward -> dpo on implicit-prompt pairs as
Anthropic HH ships them (two "Human: / Assistant:" transcripts per row, no prompt column);
orpo -> cpo -> kto on explicit prompt/chosen/rejected pairs; and a re-run of the first (named) run
with a grpo stage appended, scored by the run's reward model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import write_jsonl
from rayft.config.load import load_pipeline
from rayft.core.errors import UserError

pytestmark = pytest.mark.ray

COLORS = ["red", "blue", "green", "black", "white", "yellow"]
THINGS = ["cat", "car", "cup", "boat", "tree", "kite"]
PAIRS = [{"prompt": f"What color is the {c} {t}?", "chosen": f"The {t} is {c}.",
          "rejected": "I do not know, maybe purple or some other colour entirely."}
         for c in COLORS for t in THINGS][:24]
QA = [{"question": p["prompt"], "answer": p["chosen"]} for p in PAIRS]
# The same pairs as HH-RLHF rows: the prompt only inside the two transcripts.
HH = [{"chosen": f"\n\nHuman: {p['prompt']}\n\nAssistant: {p['chosen']}",
       "rejected": f"\n\nHuman: {p['prompt']}\n\nAssistant: {p['rejected']}"} for p in PAIRS]
COMMON = {"model": {"name": "builtin:tiny-random"}, "adapter": {"r": 8, "alpha": 16},
          "training": {"max_steps": 4, "batch_size": 4, "lr": 3e-3, "logging_steps": 1},
          "scaling": {"num_workers": 2}, "eval": {"enabled": False}}


def _config(tmp: Path, stages: list, run_name: str, storage: Path, pairs_file: str = "pairs.jsonl") -> Path:
    write_jsonl(tmp / "pairs.jsonl", PAIRS)
    write_jsonl(tmp / "hh.jsonl", HH)
    write_jsonl(tmp / "qa.jsonl", QA)
    pairs = tmp / pairs_file
    raw = {**COMMON, "run_name": run_name, "storage": {"path": str(storage)},
           "data": {"path": str(pairs), "max_length": 64, "eval_split": 4}, "stages": stages}
    path = tmp / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _summary(run_dir: Path, stage: str) -> dict:
    summary = json.loads((run_dir / stage / "summary.json").read_text())
    assert summary["status"] == "completed", summary.get("error")
    return summary


SFT_REWARD_DPO = [{"type": "sft", "data": {"path": "qa.jsonl", "template": "chat"}},
                  {"type": "reward", "center_rewards_coefficient": 0.01},
                  {"type": "dpo", "beta": 0.2, "rpo_alpha": 1.0}]  # RPO: DPO + an SFT term on chosen


@pytest.fixture(scope="module")
def sft_reward_dpo(ray_cluster, tmp_path_factory):
    from rayft.train.launch import run_pipeline

    tmp = tmp_path_factory.mktemp("align")
    storage = tmp / "runs"
    loaded = load_pipeline(_config(tmp, SFT_REWARD_DPO, "srd", storage, "hh.jsonl"))
    return tmp, storage, run_pipeline(loaded)


def test_sft_reward_dpo_pipeline(sft_reward_dpo):
    _, _, result = sft_reward_dpo
    run = result.run_dir
    sft, reward, dpo = (_summary(run, s) for s in ("sft", "reward", "dpo"))
    assert sft["global_step"] == reward["global_step"] == dpo["global_step"] == 4
    assert 0.0 <= reward["eval_accuracy"] <= 1.0 and "eval_margin" in reward
    assert reward["data"]["format"] == "preference_implicit" and reward["data"]["eval"]["rows"] == 4
    assert 0.0 <= dpo["eval_rewards/accuracies"] <= 1.0
    # Margins start at exactly 0 (the policy is its own reference) and grow with training.
    assert dpo["eval_rewards/margins"] > 0, dpo["eval_rewards/margins"]
    # TRL's per-step log-probs of the chosen and rejected answers (logging_steps 1), and their plot.
    history = dpo["preference_history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert all(h["logps_chosen"] < 0 and h["logps_rejected"] < 0 for h in history)
    assert (run / "dpo" / "plots" / "logps.png").is_file()
    # The reward model is not a policy: it starts fresh, and DPO continues from the SFT adapter.
    assert reward["init_adapter"] is None and sft["init_adapter"] is None
    assert dpo["init_adapter"] == str(run / "sft" / "adapter")
    assert result.final_output == run / "dpo" / "adapter"
    assert json.loads((run / "reward" / "adapter" / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    assert not (run / "dpo" / "adapter" / "ref").exists(), "TRL's frozen reference copy is not saved"


def test_aligned_adapters_reload(sft_reward_dpo, tiny_model_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, _, result = sft_reward_dpo
    run = result.run_dir
    sft = load_file(str(run / "sft" / "adapter" / "adapter_model.safetensors"))
    dpo = load_file(str(run / "dpo" / "adapter" / "adapter_model.safetensors"))
    assert sft.keys() == dpo.keys()
    assert any(not torch.equal(sft[k], dpo[k]) for k in sft), "DPO moved the SFT adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    model = PeftModel.from_pretrained(base, str(run / "dpo" / "adapter"))
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size
    reward = load_file(str(run / "reward" / "adapter" / "adapter_model.safetensors"))
    assert any("score" in k for k in reward), "the score head is saved with the reward adapter"


def test_reward_scorer(sft_reward_dpo, tiny_tokenizer):
    from rayft.models.reward_model import RewardScorer

    _, _, result = sft_reward_dpo
    scorer = RewardScorer(result.run_dir / "reward")  # the base model comes from the stage's config
    prompt = tiny_tokenizer.apply_chat_template([{"role": "user", "content": PAIRS[0]["prompt"]}],
                                                tokenize=False, add_generation_prompt=True)
    pair = scorer.score_pairs([prompt, prompt], [PAIRS[0]["chosen"], PAIRS[0]["rejected"]])
    assert len(pair) == 2 and all(isinstance(s, float) for s in pair)
    assert scorer.score([prompt + PAIRS[0]["chosen"]]) == pytest.approx([pair[0]], abs=1e-4)
    with pytest.raises(ValueError):
        scorer.score_pairs([prompt], [])


def test_reward_stage_scored_after_training_as_training_scored_it(sft_reward_dpo, capsys):
    """`rayft eval RUN --config` with only the reward stage (a reward-only run) succeeds and scores
    the trained reward model on its own held-out pairs exactly as TRL's evaluation during training
    did: the same pairs, the score read at the same token, so the same accuracy and margin."""
    from rayft.cli import main

    tmp, storage, result = sft_reward_dpo
    config = _config(tmp, [SFT_REWARD_DPO[1]], "reward-only", storage, "hh.jsonl")
    assert main(["eval", str(result.run_dir), "--config", str(config)]) == 0
    summary = _summary(result.run_dir, "reward")
    assert summary["heldout_pairs"] == 4
    assert summary["heldout_accuracy"] == summary["eval_accuracy"]
    assert summary["heldout_margin"] == pytest.approx(summary["eval_margin"], rel=1e-3, abs=1e-5)
    assert "reward models on held-out pairs" in capsys.readouterr().out


def test_on_policy_pairs_ranked_by_the_runs_reward_model(sft_reward_dpo, tiny_tokenizer):
    """`rayft data preference --samples 3 --score runs/<run>/reward`: the reward stage's model ranks
    the SFT policy's sampled answers; chosen is the one it scores highest."""
    from rayft.datatools.pair_builder import build_preference_pairs
    from rayft.models.reward_model import RewardScorer

    tmp, _, result = sft_reward_dpo
    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", f"data.path={tmp / 'qa.jsonl'}",
                                "data.template=chat", "data.eval_split=0", "eval.max_new_tokens=8"])
    stats = build_preference_pairs(loaded, tmp / "ranked.jsonl", adapter=str(result.run_dir / "sft" / "adapter"),
                                   limit=4, samples=3, score=str(result.run_dir / "reward"))
    pairs = [json.loads(line) for line in (tmp / "ranked.jsonl").read_text().splitlines()]
    assert stats["pairs"] == len(pairs) > 0 and stats["examples"] == 4, stats
    scorer = RewardScorer(result.run_dir / "reward")
    for pair in pairs:
        assert pair["chosen_score"] > pair["rejected_score"]
        assert pair["prompt"] in {p["prompt"] for p in PAIRS}
        prompt = tiny_tokenizer.apply_chat_template([{"role": "user", "content": pair["prompt"]}],
                                                    tokenize=False, add_generation_prompt=True)
        assert scorer.score_pairs([prompt, prompt], [pair["chosen"], pair["rejected"]]) == pytest.approx(
            [pair["chosen_score"], pair["rejected_score"]], abs=1e-4)


def test_grpo_scored_by_the_runs_reward_model(sft_reward_dpo):
    """Re-running the named run with a grpo stage appended skips the three completed stages and
    trains GRPO from the DPO policy, rewarded by the reward stage plus a programmatic reward."""
    from rayft.train.launch import run_pipeline

    tmp, storage, first = sft_reward_dpo
    grpo = {"type": "grpo", "rewards": ["stage:reward", "rayft.rewards:length_penalty"], "num_generations": 4,
            "max_completion_length": 8, "training": {"max_steps": 2, "batch_size": 2}, "data": {"eval_split": 2}}
    result = run_pipeline(load_pipeline(_config(tmp, [*SFT_REWARD_DPO, grpo], "srd", storage, "hh.jsonl")))
    assert result.run_dir == first.run_dir
    summary = _summary(result.run_dir, "grpo")
    assert summary["global_step"] == 2 and summary["init_adapter"] == str(result.run_dir / "dpo" / "adapter")
    assert "eval_reward" in summary and "eval_rewards/length_penalty/mean" in summary
    assert (result.run_dir / "grpo" / "adapter" / "adapter_model.safetensors").is_file()


def test_orpo_cpo_kto_pipeline(ray_cluster, tmp_path):
    from rayft.train.launch import run_pipeline

    stages = [{"type": "orpo", "beta": 0.2}, {"type": "cpo", "loss_type": "simpo", "cpo_alpha": 0.5},
              {"type": "kto", "desirable_weight": 1.0, "undesirable_weight": 1.5}]
    result = run_pipeline(load_pipeline(_config(tmp_path, stages, "ock", tmp_path / "runs")))
    run = result.run_dir
    orpo, cpo, kto = (_summary(run, s) for s in ("orpo", "cpo", "kto"))
    assert "eval_rewards/accuracies" in orpo and "eval_log_odds_ratio" in orpo
    assert orpo["data"]["format"] == "preference"  # explicit prompt/chosen/rejected rows
    assert "eval_rewards/margins" in cpo and "eval_nll_loss" in cpo
    assert "eval_rewards/margins" in kto and "eval_kl" in kto
    assert kto["data"]["train"]["unpaired_rows"] == 2 * kto["data"]["train"]["rows"]
    assert cpo["init_adapter"] == str(run / "orpo" / "adapter") and kto["init_adapter"] == str(run / "cpo" / "adapter")
    for stage in ("orpo", "cpo", "kto"):
        assert (run / stage / "adapter" / "adapter_config.json").is_file()
        assert not (run / stage / "adapter" / "ref").exists()


def test_on_policy_dpo_rounds_in_one_pipeline(sft_reward_dpo):
    """Two `dpo` stages with `pairs:` appended to the named run: each builds its pairs from the policy
    it starts from (round 1 from the DPO stage's adapter, round 2 from round 1's), with the greedy
    answer among the candidates, ranked by the run's reward model, on the training split of the QA
    rows only; then trains on them."""
    from rayft.train.launch import run_pipeline

    tmp, storage, first = sft_reward_dpo
    round_ = {"type": "dpo", "beta": 0.2, "rpo_alpha": 1.0, "training": {"max_steps": 2},
              "data": {"path": "qa.jsonl", "template": "chat", "eval_split": 2},
              "pairs": {"samples": 3, "score": "stage:reward", "greedy": True, "max_new_tokens": 8, "limit": 8}}
    stages = [*SFT_REWARD_DPO, {**round_, "name": "round1"}, {**round_, "name": "round2"}]
    loaded = load_pipeline(_config(tmp, stages, "srd", storage, "hh.jsonl"))
    result = run_pipeline(loaded)
    run = result.run_dir
    assert run == first.run_dir and result.final_output == run / "round2" / "adapter"
    from rayft.data.build import collect

    held_out = {e["turns"][-1][0] for e in collect(loaded.pipeline.stages[3].data).eval}
    assert len(held_out) == 2
    for name, start in (("round1", run / "dpo" / "adapter"), ("round2", run / "round1" / "adapter")):
        summary = _summary(run, name)
        pairs = _pairs_file(run / name)
        assert summary["init_adapter"] == str(start) and summary["global_step"] == 2
        assert summary["pairs"]["adapter"] == str(start), "pairs come from the policy the stage starts from"
        assert summary["pairs"]["samples"] == 3 and summary["pairs"]["greedy"] is True
        assert summary["pairs"]["pairs"] == len(pairs) > 0 and summary["pairs"]["examples"] == 8
        assert summary["data"]["format"] == "preference"
        assert summary["data"]["train"]["rows"] + summary["data"]["eval"]["rows"] == len(pairs)
        assert all(p["chosen_score"] > p["rejected_score"] for p in pairs)
        assert {p["prompt"] for p in pairs} <= {q["question"] for q in QA} - held_out  # training rows only
        assert summary["pairs"]["settings"]["samples"] == 3
    # A score that cannot rank the answers (none equals its reference): no pairs, an error naming the
    # stage's field and why, and no stage trained.
    never = {**round_, "name": "never", "pairs": {**round_["pairs"], "score": "rayft.rewards:exact_match"}}
    with pytest.raises(UserError, match=r"stages.5.pairs: no preference pairs from 8 prompt\(s\), nothing written"):
        run_pipeline(load_pipeline(_config(tmp, [*stages, never], "srd", storage, "hh.jsonl")))
    assert not (run / "never" / "adapter").exists() and not (run / "never" / "pairs" / "pairs.jsonl").exists()


def _pairs_file(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "pairs" / "pairs.jsonl").read_text().splitlines()]
