"""Text metrics and error-analysis tags for generated answers.

Pure functions over strings (no model loading) so they can be unit-tested and
reused from any evaluation loop. Scoring is delegated to well-kept libraries
(``rouge-score`` for ROUGE-L, ``sacrebleu`` for BLEU) so numbers are comparable
with published results instead of depending on a home-grown implementation.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Any

import sacrebleu
from rouge_score import rouge_scorer

#: All tags `tag_generation` can emit, in the fixed order they are returned.
TAGS: tuple[str, ...] = ("empty", "truncated", "repetition", "copied_prompt")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_WORD = re.compile(r"\w+")

# Repetition heuristic parameters (see `_is_repetitive`).
_LOOP_NGRAM_SIZES = range(3, 9)  # 3..8-word phrases
_LOOP_MIN_REPEATS = 3  # phrase must occur this many times back-to-back
_LOW_DIVERSITY_MIN_WORDS = 30  # only judge diversity on long outputs
_LOW_DIVERSITY_RATIO = 0.3  # distinct/total words below this => degenerate

# Copied-prompt heuristic parameters.
_COPY_MIN_PRECISION = 0.9
_COPY_MIN_WORDS = 5


def normalize_answer(text: str) -> str:
    """Normalize text the way the official SQuAD evaluation script does.

    Lowercase, drop ASCII punctuation, drop the articles "a"/"an"/"the" and
    collapse whitespace. This makes exact match insensitive to surface
    differences ("The Eiffel Tower." vs "eiffel tower") that do not change
    the answer, and keeps our EM comparable with SQuAD-style reported EM.
    """
    text = text.lower().translate(_PUNCT_TABLE)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """Return 1.0 if the normalized strings are identical, else 0.0.

    A float (not bool) so it can be averaged alongside the other metrics.
    """
    return float(normalize_answer(prediction) == normalize_answer(reference))


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    """Build the ROUGE-L scorer once, on first use.

    Construction loads the Porter stemmer; doing it lazily keeps module import
    cheap and avoids rebuilding it for every pair.
    """
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (LCS-based, stemmed), in [0, 1].

    Rewards getting the content words in the right order without demanding
    verbatim matches, which suits free-form generated answers.
    """
    return float(_scorer().score(reference, prediction)["rougeL"].fmeasure)


def _check_lengths(predictions: list[str], references: list[str]) -> None:
    """Raise a clear ValueError rather than silently zipping to the shorter list."""
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length, got "
            f"{len(predictions)} predictions and {len(references)} references"
        )


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus-level BLEU via sacrebleu (0-100 scale, single reference each).

    Corpus BLEU pools n-gram counts over all pairs, which is the standard and
    far more stable than averaging sentence BLEU. Raises ValueError on
    mismatched lengths or an empty corpus (BLEU is undefined there).
    """
    _check_lengths(predictions, references)
    if not predictions:
        raise ValueError("corpus_bleu needs at least one prediction/reference pair")
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def sentence_bleu(prediction: str, reference: str) -> float:
    """Sentence-level BLEU via sacrebleu (0-100, smoothed) for per-example views."""
    return float(sacrebleu.sentence_bleu(prediction, [reference]).score)


def score_pairs(predictions: list[str], references: list[str], rule: Any = None) -> dict[str, Any]:
    """Score aligned prediction/reference lists.

    Returns ``{"exact_match", "rouge_l", "bleu", "n", "per_example"}`` where
    EM and ROUGE-L are means over examples, ``bleu`` is corpus BLEU and
    ``per_example`` holds per-pair EM / ROUGE-L / sentence BLEU for error
    analysis. With no pairs, ``n`` is 0 and the aggregate metrics are None
    (a mean over nothing is undefined, and 0.0 would be misleading).
    With `rule` (a rayft.metrics.answers.AnswerRule) exact match compares the extracted, normalized
    answers, and each example also records them (`answer`, `reference_answer`).
    """
    _check_lengths(predictions, references)
    n = len(predictions)
    if n == 0:
        return {"exact_match": None, "rouge_l": None, "bleu": None, "n": 0, "per_example": []}
    per_example = []
    for p, r in zip(predictions, references):
        scores: dict[str, Any] = {"rouge_l": rouge_l(p, r), "bleu": sentence_bleu(p, r)}
        if rule is None:
            scores["exact_match"] = exact_match(p, r)
        else:
            scores["exact_match"], scores["answer"], scores["reference_answer"] = rule.matches(p, r)
        per_example.append(scores)
    return {
        "exact_match": sum(e["exact_match"] for e in per_example) / n,
        "rouge_l": sum(e["rouge_l"] for e in per_example) / n,
        "bleu": corpus_bleu(predictions, references),
        "n": n,
        "intervals": {key: bootstrap_interval([float(e[key]) for e in per_example]) for key in ("exact_match", "rouge_l")},
        "per_example": per_example,
    }


def _has_ngram_loop(words: list[str]) -> bool:
    """True if some 3..8-word phrase occurs >= 3 times back-to-back.

    Consecutive repetition of a multi-word phrase is the signature of a
    decoding loop; requiring 3+ words and 3+ repeats avoids flagging natural
    emphasis like "very very" or a phrase legitimately reused once.
    """
    total = len(words)
    for size in _LOOP_NGRAM_SIZES:
        span = size * _LOOP_MIN_REPEATS
        for start in range(total - span + 1):
            first = words[start : start + size]
            if all(
                words[start + k * size : start + (k + 1) * size] == first
                for k in range(1, _LOOP_MIN_REPEATS)
            ):
                return True
    return False


def _is_repetitive(text: str) -> bool:
    """Detect degenerate repetitive output.

    Fires on (a) an n-gram loop (see `_has_ngram_loop`), or (b) a long output
    (>= 30 words) whose distinct-word ratio is below 0.3, which catches loops
    with small variations that defeat exact n-gram matching. Normal prose of
    that length typically has a ratio well above 0.5.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    if _has_ngram_loop(words):
        return True
    if len(words) >= _LOW_DIVERSITY_MIN_WORDS:
        return len(set(words)) / len(words) < _LOW_DIVERSITY_RATIO
    return False


def _copies_prompt(prediction: str, prompt: str) -> bool:
    """True if the prediction is mostly a copy of the prompt.

    Uses ROUGE-L precision of the prediction against the prompt (share of the
    prediction's tokens that form an in-order subsequence of the prompt):
    >= 0.9 means almost nothing new was generated. Requires >= 5 words so a
    short answer that happens to appear in the prompt is not flagged.
    """
    if len(prediction.split()) < _COPY_MIN_WORDS or not prompt.strip():
        return False
    precision = _scorer().score(prompt, prediction)["rougeL"].precision
    return precision >= _COPY_MIN_PRECISION


def tag_generation(prediction: str, prompt: str, *, hit_max_tokens: bool) -> list[str]:
    """Return error-analysis tags for one generation, in the order of `TAGS`.

    - "empty": blank after stripping whitespace.
    - "truncated": generation stopped at the token budget (caller-supplied,
      since only the generator knows why it stopped).
    - "repetition": degenerate looping output (see `_is_repetitive`).
    - "copied_prompt": mostly echoes the prompt (see `_copies_prompt`).
    """
    tags: list[str] = []
    blank = not prediction.strip()
    if blank:
        tags.append("empty")
    if hit_max_tokens:
        tags.append("truncated")
    if not blank and _is_repetitive(prediction):
        tags.append("repetition")
    if not blank and _copies_prompt(prediction, prompt):
        tags.append("copied_prompt")
    return tags


def bootstrap_interval(values: list[float], weights: list[float] | None = None, resamples: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The percentile bootstrap interval of a mean over rows (`weights`: of a weighted mean, e.g. a
    token-level loss from per-row sums and token counts): {n, low, high}. Rows are resampled with
    replacement; n says how many rows the figure rests on."""
    import numpy as np

    n = len(values)
    if n == 0:
        return {"n": 0, "low": None, "high": None}
    x = np.asarray(values, dtype=float)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    totals = w[picks].sum(axis=1)
    means = np.where(totals > 0, (x[picks] * w[picks]).sum(axis=1) / np.where(totals > 0, totals, 1), np.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(means, [tail, 100 - tail])
    return {"n": n, "low": float(low), "high": float(high)}


def paired_bootstrap(scores_a: list[float], scores_b: list[float], resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean of `b - a` over paired examples (the same held-out rows scored for two models) and its
    percentile bootstrap interval: the rows are resampled with replacement, the pairs kept together.
    An interval above zero says `b` beats `a` on rows like these beyond resampling noise."""
    import numpy as np

    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError(f"paired_bootstrap needs two equal, non-empty lists (got {len(scores_a)} and {len(scores_b)})")
    diff = np.asarray(scores_b, dtype=float) - np.asarray(scores_a, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean_diff": float(diff.mean()), "low": float(low), "high": float(high), "n": len(diff),
            "confidence": confidence}
