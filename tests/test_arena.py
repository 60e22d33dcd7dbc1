"""`rayft eval arena`: Bradley-Terry ratings (choix) on the Elo scale with bootstrap intervals, and the
whole arena on models whose answers are known: the tiny model twice (a repeated model must tie with
itself) and two models behind a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/arena_helpers.py),
judged by a function, by a judge model behind the API, and by a reward model."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from arena_helpers import REFUSE, start_server
from conftest import DEMO_DATA
from rayft.core.errors import UserError
from rayft.metrics.ratings import ANCHOR_RATING, Battle, rate


def _battles(p_win: float, a: str, b: str, n: int, rng: random.Random) -> list[Battle]:
    return [Battle(a, b, "a" if rng.random() < p_win else "b") for _ in range(n)]


def test_ratings_order_anchor_and_intervals_on_known_odds():
    """Three models, A beats B and B beats C with odds 3:1: A > B > C, B anchored at 1000, each gap
    near 400*log10(3) = 191 Elo points, and the true gap inside the bootstrap interval."""
    rng = random.Random(1)
    battles = _battles(0.75, "A", "B", 300, rng) + _battles(0.75, "B", "C", 300, rng) + _battles(0.9, "A", "C", 300, rng)
    result = rate(["A", "B", "C"], battles, anchor="B", bootstrap=100)
    by = {r["model"]: r for r in result["ratings"]}
    assert [r["model"] for r in result["ratings"]] == ["A", "B", "C"]
    assert by["B"]["rating"] == pytest.approx(ANCHOR_RATING)
    assert 140 < by["A"]["rating"] - 1000 < 250 and 140 < 1000 - by["C"]["rating"] < 250
    assert by["A"]["low"] < 1191 < by["A"]["high"] and by["C"]["low"] < 809 < by["C"]["high"]
    assert result["winrate"]["A"]["B"] + result["winrate"]["B"]["A"] == pytest.approx(1.0)
    assert by["A"]["wins"] + by["A"]["losses"] + by["A"]["ties"] == 600


def test_a_repeated_model_ties_with_itself():
    """Two copies of one model: every battle between them a tie and the same record against the
    others, so equal ratings and overlapping intervals."""
    rng = random.Random(2)
    results = [rng.random() < 0.7 for _ in range(100)]
    battles = [Battle("m", "m-again", "tie") for _ in range(100)]
    for name in ("m", "m-again"):
        battles += [Battle(name, "other", "a" if won else "b") for won in results]
    result = rate(["m", "m-again", "other"], battles, anchor="other", bootstrap=100)
    by = {r["model"]: r for r in result["ratings"]}
    assert by["m"]["rating"] == pytest.approx(by["m-again"]["rating"], abs=1e-6)
    assert by["m"]["low"] < by["m-again"]["high"] and by["m-again"]["low"] < by["m"]["high"]
    assert result["winrate"]["m"]["m-again"] == 0.5


def _config(tmp_path, server, judge, **arena):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in
                               ("Name a colour.", "What is 2+2?", "Say hello.", "Name a fruit.", "Spell cat.")))
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    config = tmp_path / "arena.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": "builtin:tiny-random"}, "data": {"path": str(DEMO_DATA)},
        "stages": [{"name": "sft", "type": "sft"}], "storage": {"path": str(tmp_path / "runs")},
        "eval": {"max_new_tokens": 8, "arena": {
            "models": {"base": "base", "base-again": "base", "agree": {"endpoint": url, "model": "agree"},
                       "refuse": {"endpoint": url, "model": "refuse"}},
            "prompts": str(prompts), "judge": judge, "bootstrap": 50, **arena}}}))
    return config


@pytest.fixture(scope="module")
def server():
    found = start_server()
    yield found
    found.shutdown()


def test_the_arena_ranks_models_whose_answers_are_known(server, tmp_path, capsys):
    """Judge: an answer saying YES! wins, one saying NO! loses (a function). `agree` always says YES!,
    `refuse` NO!, the tiny model (twice) neither: agree > base = base-again > refuse, in eval.json, both
    reports and the picture; the endpoints got the same templated prompts as the local model."""
    from rayft.cli import main

    config = _config(tmp_path, server, {"function": "arena_helpers:agreeing_wins"})
    out = tmp_path / "out"
    assert main(["eval", "arena", str(config), "--out", str(out)]) == 0
    arena = json.loads((out / "eval.json").read_text())["arena"]
    order = [r["model"] for r in arena["ratings"]]
    by = {r["model"]: r for r in arena["ratings"]}
    assert order[0] == "agree" and order[-1] == "refuse" and set(order[1:3]) == {"base", "base-again"}
    assert by["base"]["rating"] == pytest.approx(by["base-again"]["rating"], abs=1e-6) == 1000
    assert by["base"]["low"] <= by["base-again"]["high"] and by["base-again"]["low"] <= by["base"]["high"]
    assert by["refuse"]["losses"] == 15 and by["agree"]["wins"] == 15  # 3 opponents x 5 prompts
    assert by["agree"]["high"] > by["agree"]["rating"] > by["base"]["high"]
    assert arena["battles"] == 6 * 5 and arena["winrate"]["base"]["base-again"] == 0.5
    assert arena["examples"][0]["refuse"] == REFUSE
    sent = [body["prompt"] for path, body in server.requests if path == "/v1/completions"]
    assert len(sent) == 10 and "Name a colour." in sent[0] and sent[0] != "Name a colour."  # chat-templated
    report = (out / "report.md").read_text()
    assert "## Arena" in report and "| agree |" in report and "arena_winrate.png" in report
    assert (out / "eval_plots" / "arena_winrate.png").stat().st_size > 5000
    assert "<h2>Arena</h2>" in (out / "report.html").read_text()
    assert "arena: 30 judged pairs" in capsys.readouterr().out


def test_a_judge_model_that_always_picks_the_first_answer_makes_every_pair_a_tie(server, tmp_path):
    """A judge behind the API with pure position bias ([[A]] whatever it is shown): judged in both orders,
    every verdict disagrees with its mirror, so every pair is a tie and every rating 1000."""
    from rayft.eval.arena import run_arena
    from rayft.config.load import load_pipeline

    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    before = len(server.requests)
    config = _config(tmp_path, server, {"endpoint": url, "model": "judge"}, num_prompts=2)
    run_arena(load_pipeline(config), tmp_path / "out")
    arena = json.loads((tmp_path / "out" / "eval.json").read_text())["arena"]
    assert all(r["ties"] == 6 and r["wins"] == 0 for r in arena["ratings"])
    assert all(r["rating"] == pytest.approx(1000) for r in arena["ratings"])
    judged = [body for path, body in server.requests[before:] if path == "/v1/chat/completions"]
    assert len(judged) == 2 * 6 * 2 and "[User Question]" in judged[0]["messages"][1]["content"]


def test_a_reward_model_judge_prefers_what_it_scores_higher(server, tmp_path, tiny_model_path):
    """The judge is a reward model (here the tiny model with a score head): every verdict is the sign of
    the two answers' scores, computed apart by rayft.models.reward_model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rayft.config.load import load_pipeline
    from rayft.eval.arena import run_arena
    from rayft.models.reward_model import RewardScorer

    folder = tmp_path / "reward"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(folder)
    config = _config(tmp_path, server, {"reward": str(folder)}, num_prompts=3)
    loaded = load_pipeline(config)
    loaded.pipeline.eval.arena.models = {k: v for k, v in loaded.pipeline.eval.arena.models.items() if k != "base-again"}
    run_arena(loaded, tmp_path / "out")
    arena = json.loads((tmp_path / "out" / "eval.json").read_text())["arena"]
    scorer = RewardScorer(folder)
    from rayft.eval.arena import _prompts
    from rayft.models.loader import load_tokenizer

    prompts, _ = _prompts(loaded, load_tokenizer(tiny_model_path))
    for verdict in arena["verdicts"]:
        a, b = verdict["a"], verdict["b"]
        answers = {m: [ex[m] for ex in arena["examples"]] for m in (a, b)}
        sa, sb = scorer.score_pairs(prompts, answers[a]), scorer.score_pairs(prompts, answers[b])
        assert verdict["winners"] == ["tie" if x == y else "a" if x > y else "b" for x, y in zip(sa, sb)]


def test_bad_arena_configs_are_named(tmp_path, server):
    from rayft.config.load import load_pipeline
    from rayft.core.errors import ConfigError
    from rayft.eval.arena import run_arena

    with pytest.raises(ConfigError, match="exactly one of reward, function, endpoint"):
        load_pipeline(_config(tmp_path, server, {"function": "arena_helpers:agreeing_wins", "reward": "x"}))
    config = _config(tmp_path, server, {"function": "arena_helpers:no_such"})
    with pytest.raises(UserError, match="has no function 'no_such'"):
        run_arena(load_pipeline(config), tmp_path / "out")
    loaded = load_pipeline(_config(tmp_path, server, {"function": "arena_helpers:agreeing_wins"}))
    loaded.pipeline.eval.arena.models["gone"] = str(tmp_path / "missing")
    with pytest.raises(UserError, match=r"eval.arena.models.gone: .*missing: no such folder"):
        run_arena(loaded, tmp_path / "out")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"other": 1}\n')
    loaded = load_pipeline(_config(tmp_path, server, {"function": "arena_helpers:agreeing_wins"}, prompts=str(bad)))
    with pytest.raises(UserError, match=r"bad.jsonl:2: no `prompt`, `instruction` or `question`"):
        run_arena(loaded, tmp_path / "out")
    assert bad.read_text() == '{"instruction": "ok"}\n{"other": 1}\n'
