"""`rayft data preference`: the model's answers become `rejected`, references `chosen`; pairs
where both agree are skipped and counted; the output trains as preference data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import write_jsonl
from rayft.config.load import load_pipeline
from rayft.datatools.pair_builder import build_preference_pairs
from rayft.core.errors import UserError


def test_pairs_from_the_tiny_model(tmp_path, tiny_model_path):
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{2 * i}"} for i in range(12)]
    rows.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                              {"role": "user", "content": "bye"}, {"role": "assistant", "content": "goodbye"}]})
    src = write_jsonl(tmp_path / "sft.jsonl", rows[:12])
    chat = write_jsonl(tmp_path / "chat.jsonl", rows[12:])
    before = src.read_bytes()
    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", f"data.sources=[{{path: {src}}}, {{path: {chat}}}]",
                                "data.eval_split=0", "eval.max_new_tokens=8", "eval.batch_size=5",
                                "eval.do_sample=true"])  # the random model greedily emits only newlines
    stats = build_preference_pairs(loaded, tmp_path / "pairs.jsonl")
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert stats["examples"] == 13 and stats["pairs"] == len(pairs)
    assert stats["pairs"] + stats["skipped_same_answer"] + stats["skipped_empty_answer"] == 13
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    by_source = {p["source"].rsplit(":", 1)[0]: p for p in pairs}
    single = next(p for p in pairs if "sft.jsonl" in p["source"])
    assert isinstance(single["prompt"], str) and single["prompt"].startswith("What is")
    if str(chat) in by_source:  # multi-turn rows keep their history as a message list
        assert by_source[str(chat)]["prompt"][-1] == {"role": "user", "content": "bye"}
    assert src.read_bytes() == before
    # The output is valid rayft preference data.
    from rayft.data.build import collect

    out_cfg = load_pipeline(None, [f"data.path={tmp_path / 'pairs.jsonl'}", "data.eval_split=0"]).pipeline.data
    assert collect(out_cfg).stats["formats"] == ["preference"]


def test_pairs_come_from_the_training_split_by_default(tmp_path):
    """Held-out questions stay out of the pairs unless asked for, so a DPO stage trained on them
    can still be evaluated on the SFT stage's held-out set."""
    src = write_jsonl(tmp_path / "sft.jsonl", [{"question": f"What is {i} times 3?", "answer": f"{3 * i}"}
                                               for i in range(10)])
    sets = ["model.name=builtin:tiny-random", f"data.path={src}", "data.eval_split=0.3", "data.seed=7",
            "eval.max_new_tokens=6", "eval.do_sample=true"]
    from rayft.data.build import collect

    loaded = load_pipeline(None, sets)
    collected = collect(loaded.pipeline.stages[0].data)
    held = {e["turns"][-1][0] for e in collected.eval}
    counts = {}
    for split in ("train", "eval", "all"):
        stats = build_preference_pairs(loaded, tmp_path / f"{split}.jsonl", split=split)
        pairs = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        prompts = {p["prompt"] for p in pairs}
        counts[split] = stats["examples"]
        if split == "train":
            assert not prompts & held
        if split == "eval":
            assert prompts <= held
    assert counts == {"train": 7, "eval": 3, "all": 10}
    with pytest.raises(UserError, match="--split"):
        build_preference_pairs(loaded, tmp_path / "x.jsonl", split="test")


def test_refuses_to_overwrite_an_input(tmp_path):
    src = write_jsonl(tmp_path / "sft.jsonl", [{"question": "q", "answer": "a"}])
    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", f"data.path={src}"])
    with pytest.raises(UserError, match="input files are never modified"):
        build_preference_pairs(loaded, src)


def test_cli_preference_verb(tmp_path):
    src = write_jsonl(tmp_path / "sft.jsonl", [{"question": f"q{i}?", "answer": f"a{i}"} for i in range(4)])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: 'builtin:tiny-random'}}\ndata: {{path: {src.name}, eval_split: 0}}\n"
                   "eval: {max_new_tokens: 4, do_sample: true}\n")
    out = subprocess.run([sys.executable, "-m", "rayft", "data", "preference", str(cfg), "--out",
                          str(tmp_path / "p.jsonl"), "--limit", "3"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert '"examples": 3' in out.stdout and "generated 3/3 answers" in out.stdout


def test_on_policy_pairs_are_the_best_and_worst_of_sampled_answers(tmp_path):
    """--samples N --score S: both sides are the model's own samples, ranked by the score: here a
    programmatic reward (shorter is better)."""
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."} for i in range(6)]
    src = write_jsonl(tmp_path / "sft.jsonl", rows)
    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", f"data.path={src}", "data.eval_split=0",
                                "eval.max_new_tokens=12", "eval.batch_size=8"])
    stats = build_preference_pairs(loaded, tmp_path / "short.jsonl", samples=4, score="rayft.rewards:length_penalty")
    pairs = [json.loads(line) for line in (tmp_path / "short.jsonl").read_text().splitlines()]
    assert stats["samples"] == 4 and stats["pairs"] == len(pairs) > 0, stats
    assert stats["pairs"] + stats["skipped_tied"] + stats["skipped_too_few_answers"] == 6
    references = {r["answer"] for r in rows}
    for pair in pairs:
        assert pair["chosen_score"] > pair["rejected_score"]
        assert len(pair["chosen"]) < len(pair["rejected"])  # length_penalty = -characters / 100
        assert pair["chosen_score"] == pytest.approx(-len(pair["chosen"]) / 100)
        assert pair["chosen"] not in references and pair["rejected"] not in references  # the model's words
    assert stats["mean_chosen_score"] > stats["mean_rejected_score"]

    from rayft.data.build import collect

    out_cfg = load_pipeline(None, [f"data.path={tmp_path / 'short.jsonl'}", "data.eval_split=0"]).pipeline.data
    assert collect(out_cfg).stats["formats"] == ["preference"]


def test_rouge_l_ranks_answers_by_their_overlap_with_the_reference():
    """--score rouge_l, on answers chosen for it (the tiny random model's samples all score 0
    against any reference): closest chosen, farthest rejected, ties and empty answers skipped."""
    from rayft.datatools.pair_builder import _ranked_pairs, resolve_score
    from rayft.metrics.text import rouge_l

    examples = [{"turns": [("What is two plus two?", "Two plus two is four.")], "_origin": "f.jsonl:1"},
                {"turns": [("Name a colour.", "Blue is a colour.")], "_origin": "f.jsonl:2"},
                {"turns": [("Say hi.", "Hi there.")], "_origin": "f.jsonl:3"}]
    texts = [["Two plus two is four.", "It is four.", "Bananas."],  # ranked: exact > partial > none
             ["Red.", "red.", ""],  # same text (normalized) and an empty one: tied, no pair
             ["Hi there friend.", "", ""]]  # one non-empty answer: too few
    pairs, counts = _ranked_pairs(examples, ["p1", "p2", "p3"], texts, resolve_score("rouge_l"), 0.0)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("Two plus two is four.", "Bananas.")]
    assert pairs[0]["chosen_score"] == pytest.approx(1.0) and pairs[0]["rejected_score"] == pytest.approx(0.0)
    assert pairs[0]["chosen_score"] == pytest.approx(rouge_l("Two plus two is four.", "Two plus two is four."))
    assert counts["skipped_tied"] == 1 and counts["skipped_too_few_answers"] == 1
    none, gapped = _ranked_pairs(examples[:1], ["p1"], texts[:1], resolve_score("rouge_l"), 1.0)
    assert none == [] and gapped["skipped_tied"] == 1  # --min-gap 1: no gap is wide enough
    # --greedy: the greedy answer is one more candidate, and the stats say when it won or lost.
    samples = [["It is four.", "Bananas."], ["Blue.", "Green is nice."], ["Hi there friend.", "Bye."]]
    greedy = ["Two plus two is four.", "Cats.", "Hi there."]
    pairs, counts = _ranked_pairs(examples, ["p1", "p2", "p3"], samples, resolve_score("rouge_l"), 0.0, greedy)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("Two plus two is four.", "Bananas."), ("Blue.", "Cats."), ("Hi there.", "Bye.")]
    assert counts["chosen_is_greedy"] == 2 and counts["rejected_is_greedy"] == 1


def test_greedy_candidate_and_seeded_samples(tmp_path):
    """--greedy puts the model's greedy answer among the candidates (the tiny model's greedy answers
    are whitespace, which never count, so they add no pair here: what the stats show); --seed makes
    the samples repeatable and another seed gives others."""
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."} for i in range(5)]
    src = write_jsonl(tmp_path / "sft.jsonl", rows)
    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", f"data.path={src}", "data.eval_split=0",
                                "eval.max_new_tokens=10", "eval.batch_size=8"])
    score = "rayft.rewards:length_penalty"
    runs = {name: build_preference_pairs(loaded, tmp_path / f"{name}.jsonl", samples=3, score=score, seed=seed,
                                         greedy=greedy)
            for name, seed, greedy in [("a", 0, False), ("again", 0, False), ("other", 5, False), ("g", 0, True)]}
    text = {name: (tmp_path / f"{name}.jsonl").read_text() for name in runs}
    assert text["a"] == text["again"] and text["a"] != text["other"]
    assert runs["other"]["seed"] == 5 and runs["g"]["greedy"] is True
    assert "chosen_is_greedy" in runs["g"] and "chosen_is_greedy" not in runs["a"]
    assert text["g"] == text["a"]  # same seed, same samples; the whitespace greedy answers never count
    with pytest.raises(UserError, match="--greedy adds the greedy answer"):
        build_preference_pairs(loaded, tmp_path / "x.jsonl", greedy=True)


def constant_reward(prompts, completions, **_):
    """A reward that cannot rank (the RL stages' signature): every answer scores 1."""
    return [1.0] * len(completions)


def test_no_pairs_is_an_error_that_says_why_and_writes_nothing(tmp_path):
    """Every sampled answer scores the same (a constant reward): no pair, no empty file to train on,
    and the message names the reason and what to change."""
    src = write_jsonl(tmp_path / "sft.jsonl", [{"question": f"q{i}?", "answer": f"a{i}"} for i in range(3)])
    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", f"data.path={src}", "data.eval_split=0",
                                "eval.max_new_tokens=4"])
    with pytest.raises(UserError, match=r"no preference pairs from 3 prompt\(s\), nothing written \(3 prompt\(s\): "
                       r"the best and worst answers scored within --min-gap.*\): sample more varied answers"):
        build_preference_pairs(loaded, tmp_path / "p.jsonl", samples=2, score="test_preference_builder:constant_reward")
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize("kwargs,message", [
    ({"score": "rouge_l"}, "--score ranks sampled answers: it needs --samples 2"),
    ({"samples": 3}, "on-policy pairs need --score"),
    ({"samples": 3, "score": "bleu"}, "--score: 'bleu' is not rouge_l"),
    ({"samples": 3, "score": "stage:reward"}, "--score: name the reward stage by its folder"),
    ({"samples": 3, "score": "no_such_module:f"}, "--score: cannot import 'no_such_module'"),
    ({"samples": 0}, "--samples: 0 must be at least 1"),
])
def test_bad_sampling_options_are_refused_before_the_model_loads(tmp_path, kwargs, message):
    src = write_jsonl(tmp_path / "sft.jsonl", [{"question": "q", "answer": "a"}])
    loaded = load_pipeline(None, ["model.name=builtin:no-such-model", f"data.path={src}"])  # never reached
    with pytest.raises(UserError, match=message):
        build_preference_pairs(loaded, tmp_path / "x.jsonl", **kwargs)


def test_on_policy_pairs_config_is_checked_when_it_loads(tmp_path):
    """A `pairs:` section of a dpo stage: bad fields and a `stage:` score that names no earlier reward
    stage are config errors naming the field, before any model loads."""
    from rayft.core.errors import ConfigError

    sets = ["model.name=builtin:tiny-random", "data.path=x.jsonl"]
    with pytest.raises(ConfigError, match=r"stages.1.pairs.score: 'stage:rm' names no earlier `reward` stage"):
        load_pipeline(None, [*sets, "stages=[{type: sft}, {type: dpo, pairs: {score: 'stage:rm'}}]"])
    with pytest.raises(ConfigError, match=r"stages.0.pairs.samples"):
        load_pipeline(None, [*sets, "stages=[{type: dpo, pairs: {samples: 1}}]"])
    loaded = load_pipeline(None, [*sets, "stages=[{type: sft}, {type: reward, name: rm}, "
                                       "{type: dpo, pairs: {score: 'stage:rm', min_gap: 0.1}}]"])
    pairs = loaded.pipeline.stages[2].pairs
    assert (pairs.samples, pairs.greedy, pairs.min_gap, pairs.temperature) == (4, True, 0.1, 0.8)


def test_a_pairs_score_that_cannot_be_imported_stops_the_run_before_any_stage(tmp_path):
    """The stages before the dpo stage may run for hours: a `pairs.score` function that cannot be
    imported fails at the start, naming the field, and nothing is trained."""
    from rayft.core.errors import ConfigError
    from rayft.train.launch import run_pipeline

    src = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q?", "answer": "a"}])
    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", f"data.path={src}", f"storage.path={tmp_path}",
                                "run_name=r", "stages=[{type: sft}, {type: dpo, pairs: {score: 'no_such_mod:f'}}]"])
    with pytest.raises(ConfigError, match=r"stages.1.pairs.score: cannot import 'no_such_mod'"):
        run_pipeline(loaded)
    assert not (tmp_path / "r" / "sft").exists()


def test_a_dpo_stage_with_pairs_is_evaluated_on_its_held_out_questions(tmp_path, tiny_tokenizer):
    """A run whose first stage is `dpo` with `pairs:` (jobs/configs/dpo_lamini.yaml) reads SFT rows:
    `rayft eval` compares base and tuned on their held-out questions and reference answers (the
    pairs exist only inside the run)."""
    from rayft.eval.compare import held_out

    rows = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."} for i in range(10)]
    src = write_jsonl(tmp_path / "qa.jsonl", rows)
    loaded = load_pipeline(None, ["model.name=builtin:tiny-random", f"data.path={src}", "data.eval_split=3",
                                "stages=[{type: dpo, pairs: {samples: 2}}]"])
    held = held_out(loaded, tiny_tokenizer)
    assert len(held.prompts) == 3 and held.rejected is None
    answers = {r["question"]: r["answer"] for r in rows}
    assert all(any(q in p for q in answers) for p in held.prompts)
    assert set(held.references) <= set(answers.values())
