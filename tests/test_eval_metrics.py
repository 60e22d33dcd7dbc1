"""Tests for rayft.metrics.text on hand-checkable inputs."""

from __future__ import annotations

import pytest

from rayft.metrics.text import (
    TAGS,
    corpus_bleu,
    exact_match,
    normalize_answer,
    rouge_l,
    score_pairs,
    sentence_bleu,
    tag_generation,
)

NORMAL_PROMPT = "Question: What is the capital of France?\nAnswer:"
NORMAL_ANSWER = "Paris is the capital of France and its largest city."


def test_normalize_answer_squad_rules() -> None:
    assert normalize_answer("  The Eiffel   Tower!  ") == "eiffel tower"
    assert normalize_answer("An apple, a day.") == "apple day"
    # Articles only as whole words: "theory" / "another" are kept intact.
    assert normalize_answer("Theory of another") == "theory of another"


def test_exact_match_ignores_case_punctuation_articles() -> None:
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("PARIS!", "paris") == 1.0
    assert exact_match("an answer", "Answer") == 1.0


def test_exact_match_mismatch() -> None:
    assert exact_match("Paris", "London") == 0.0
    assert exact_match("Paris France", "Paris") == 0.0


def test_rouge_l_identical_and_disjoint() -> None:
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("alpha beta gamma", "delta epsilon zeta") == 0.0


def test_rouge_l_partial_overlap_by_hand() -> None:
    # pred has 3 tokens, ref 6; LCS = "the cat sat" = 3.
    # P = 3/3 = 1, R = 3/6 = 0.5, F = 2PR/(P+R) = 1/1.5 = 2/3.
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # pred 6 tokens, ref 6; LCS = "the cat on the mat" = 5 -> P = R = F = 5/6.
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)


def test_rouge_l_uses_stemming() -> None:
    assert rouge_l("dogs running", "dog runs") == 1.0


def test_bleu_identical_is_100() -> None:
    sent = "the quick brown fox jumps over the lazy dog"
    assert corpus_bleu([sent, sent], [sent, sent]) == pytest.approx(100.0)
    assert sentence_bleu(sent, sent) == pytest.approx(100.0)


def test_bleu_disjoint_is_near_zero() -> None:
    score = corpus_bleu(["alpha beta gamma delta"], ["one two three four"])
    assert score == pytest.approx(0.0, abs=1e-6)
    assert sentence_bleu("alpha beta gamma delta", "one two three four") < 1.0


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same length"):
        score_pairs(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="same length"):
        corpus_bleu(["a"], [])


def test_corpus_bleu_empty_raises() -> None:
    with pytest.raises(ValueError, match="at least one"):
        corpus_bleu([], [])


def test_score_pairs_empty() -> None:
    out = score_pairs([], [])
    assert out == {"exact_match": None, "rouge_l": None, "bleu": None, "n": 0, "per_example": []}


def test_score_pairs_values() -> None:
    preds = ["The cat sat.", "alpha beta gamma"]
    refs = ["the cat sat", "delta epsilon zeta"]
    out = score_pairs(preds, refs)
    assert out["n"] == 2
    assert out["exact_match"] == pytest.approx(0.5)
    assert out["rouge_l"] == pytest.approx(0.5)
    assert out["bleu"] == pytest.approx(corpus_bleu(preds, refs))
    assert len(out["per_example"]) == 2
    first, second = out["per_example"]
    assert set(first) == {"exact_match", "rouge_l", "bleu"}
    assert (first["exact_match"], first["rouge_l"]) == (1.0, 1.0)
    assert (second["exact_match"], second["rouge_l"]) == (0.0, 0.0)
    assert first["bleu"] > second["bleu"]


def test_normal_answer_has_no_tags() -> None:
    assert tag_generation(NORMAL_ANSWER, NORMAL_PROMPT, hit_max_tokens=False) == []


def test_tag_empty() -> None:
    assert tag_generation("   \n\t", NORMAL_PROMPT, hit_max_tokens=False) == ["empty"]


def test_tag_truncated() -> None:
    assert tag_generation(NORMAL_ANSWER, NORMAL_PROMPT, hit_max_tokens=True) == ["truncated"]


def test_tag_repetition_ngram_loop() -> None:
    looped = "The answer is " + "I do not know. " * 3
    assert tag_generation(looped, NORMAL_PROMPT, hit_max_tokens=False) == ["repetition"]


def test_tag_repetition_low_diversity() -> None:
    # 40 words over 4 distinct ones, with no exact back-to-back phrase loop.
    words = ["red", "blue", "green", "red", "green", "blue", "blue", "red"] * 5
    words = [w if i % 3 else "gold" for i, w in enumerate(words)]
    text = " ".join(words)
    assert tag_generation(text, NORMAL_PROMPT, hit_max_tokens=False) == ["repetition"]


def test_repetition_not_fired_by_natural_emphasis() -> None:
    text = "It was very very good, and the food was good too."
    assert "repetition" not in tag_generation(text, NORMAL_PROMPT, hit_max_tokens=False)


def test_tag_copied_prompt() -> None:
    prompt = "Summarise: The committee approved the new budget after a long debate on Tuesday."
    copied = "The committee approved the new budget after a long debate"
    assert tag_generation(copied, prompt, hit_max_tokens=False) == ["copied_prompt"]


def test_copied_prompt_needs_five_words() -> None:
    prompt = "Question: What is the capital of France? Answer:"
    assert tag_generation("capital of France", prompt, hit_max_tokens=False) == []


def test_tag_order_is_fixed() -> None:
    prompt = "repeat after me: I do not know I do not know I do not know"
    pred = "I do not know I do not know I do not know"
    expected = ["truncated", "repetition", "copied_prompt"]
    assert tag_generation(pred, prompt, hit_max_tokens=True) == expected
    assert tag_generation("", prompt, hit_max_tokens=True) == ["empty", "truncated"]
    assert TAGS == ("empty", "truncated", "repetition", "copied_prompt")


def test_number_normalization() -> None:
    from rayft.metrics.answers import normalize_numbers

    cases = {"1,000": "1000", "$5": "5", "3.50": "3.5", "42.0": "42", "-0.0": "0", "007": "7",
             "paid 1,234,567.10 in total": "paid 1234567.1 in total", "v1.2.3": "v1.2.3", "x12": "x12"}
    for text, expected in cases.items():
        assert normalize_numbers(text) == expected, text


def test_answer_pattern_exact_match_on_benchmark_style_answers() -> None:
    """GSM8K-style references ("... #### 72"): without a pattern nothing matches exactly; with
    `#### (\\S+)` and number normalization the right final answers do, whatever the reasoning."""
    from rayft.metrics.answers import AnswerRule

    refs = ["She sold 48 + 24 = 72 clips.\n#### 72", "Total is 1,000 dollars.\n#### 1000", "#### 5"]
    preds = ["48 + 24 = 72 so #### 72.", "The total: #### 1,000", "I think it is 6"]
    plain = score_pairs(preds, refs)
    assert plain["exact_match"] == 0.0
    scored = score_pairs(preds, refs, AnswerRule(r"#### (\S+)", ("numbers", "strip")))
    assert [e["exact_match"] for e in scored["per_example"]] == [1.0, 1.0, 0.0]
    assert [e["answer"] for e in scored["per_example"]] == ["72.", "1,000", None]
    assert [e["reference_answer"] for e in scored["per_example"]] == ["72", "1000", "5"]
    assert scored["rouge_l"] == plain["rouge_l"]  # ROUGE-L stays on the whole texts
    # A reference the pattern does not match is its own answer; steps apply in a fixed order.
    rule = AnswerRule(r"[Tt]he answer is (.+)", ("strip", "lowercase", "numbers"))
    assert rule.matches("So the answer is Paris.", "paris")[0] == 1.0
    assert rule.matches("the answer is 2,000.", "2000")[0] == 1.0


def test_answer_pattern_is_checked_in_the_config() -> None:
    from rayft.config.load import validate
    from rayft.core.errors import ConfigError

    for pattern, message in [("#### \\S+", "needs a group"), ("(unclosed", "not a valid regular expression")]:
        with pytest.raises(ConfigError, match="eval.answer_pattern") as err:
            validate({"model": {"name": "builtin:tiny-random"}, "eval": {"answer_pattern": pattern}})
        assert message in str(err.value)
    with pytest.raises(ConfigError, match="eval.normalize"):
        validate({"model": {"name": "builtin:tiny-random"}, "eval": {"normalize": ["numbrs"]}})


def test_paired_bootstrap_interval_sees_a_consistent_gain_and_not_noise():
    import random

    from rayft.metrics.text import paired_bootstrap

    rng = random.Random(1)
    base = [rng.random() for _ in range(120)]
    better = [b + 0.05 + rng.gauss(0, 0.02) for b in base]  # every row a little better
    gain = paired_bootstrap(base, better)
    assert gain["n"] == 120 and gain["mean_diff"] == pytest.approx(0.05, abs=0.01)
    assert 0 < gain["low"] < gain["mean_diff"] < gain["high"]
    noise = paired_bootstrap(base, [b + rng.gauss(0, 0.2) for b in base])  # no systematic change
    assert noise["low"] < 0 < noise["high"]
    assert paired_bootstrap(base, better, seed=3)["low"] == pytest.approx(gain["low"], abs=0.005)
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap(base, better[:-1])
