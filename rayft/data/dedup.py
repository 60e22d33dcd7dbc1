"""Remove duplicate training rows: exact (after normalization) and near (MinHash LSH).

Duplicates make a model memorise the repeated rows and leak between train and eval splits, so
they are removed before training. Nothing is dropped silently: every removed row is reported
with the origin of the row it duplicates, and `write_removed` puts the pairs on disk for review.
The FIRST occurrence (file order) is always the one kept, so results do not depend on luck.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from datasketch import MinHash, MinHashLSH

from rayft.data.readers import Row


def _is_punct(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def normalize_text(text: str) -> str:
    """Canonical form under which two texts count as the same.

    - NFKC folds compatibility forms (full-width letters, ligatures, non-breaking spaces) that
      look identical to a reader but differ byte-wise.
    - casefold (not lower) handles case properly beyond ASCII (e.g. German ß -> ss).
    - whitespace is collapsed because line wrapping and indentation do not change content.
    - punctuation (Unicode category P*) is stripped only at the edges of each word: "Hello," and
      "hello" are the same word, but inner punctuation carries meaning ("3.14" vs "314",
      "don't", "e-mail", "a.b()"), so it stays. Symbols (+, =, $) are not punctuation and stay.
      A word made only of punctuation disappears.
    """
    words = unicodedata.normalize("NFKC", text).casefold().split()
    out = []
    for word in words:
        start, end = 0, len(word)
        while start < end and _is_punct(word[start]):
            start += 1
        while end > start and _is_punct(word[end - 1]):
            end -= 1
        if start < end:
            out.append(word[start:end])
    return " ".join(out)


@dataclass
class Removed:
    """One removed row and the kept row it duplicates (similarity 1.0 for exact matches)."""

    origin: str
    duplicate_of: str
    kind: Literal["exact", "near"]
    similarity: float


@dataclass
class DedupResult:
    kept: list[Row]
    removed: list[Removed]

    def stats(self) -> dict[str, int]:
        """Counts for the run report."""
        return {
            "exact_removed": sum(r.kind == "exact" for r in self.removed),
            "near_removed": sum(r.kind == "near" for r in self.removed),
        }


def _shingles(words: list[str], ngram: int) -> list[bytes]:
    """Word n-grams; a text shorter than `ngram` words is one shingle, so it still has a sketch."""
    if len(words) < ngram:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i:i + ngram]).encode("utf-8") for i in range(len(words) - ngram + 1)]


def dedup_rows(
    rows: list[Row],
    text_of: Callable[[Row], str],
    *,
    exact: bool = True,
    near: bool = False,
    threshold: float = 0.85,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
) -> DedupResult:
    """Keep the first occurrence of each text; report every later duplicate.

    The exact pass (hash of the normalized text) runs first because it is cheap and certain; the
    near pass then sees only survivors. In the near pass LSH only proposes candidates, and a row
    is removed only if a kept candidate's estimated Jaccard reaches `threshold`, so LSH false
    positives never remove anything. Deterministic for a given `seed`.
    """
    normalized = [normalize_text(text_of(row)) for row in rows]
    removed: list[Removed] = []
    survivors = list(range(len(rows)))

    if exact:
        first: dict[bytes, int] = {}
        survivors = []
        for i, text in enumerate(normalized):
            key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
            if key in first:
                removed.append(Removed(rows[i].origin, rows[first[key]].origin, "exact", 1.0))
            else:
                first[key] = i
                survivors.append(i)

    if near:
        # Every LSH candidate is verified with the estimated Jaccard, so a false candidate costs
        # one comparison while a missed one is a duplicate left in. datasketch's default
        # weights (0.5, 0.5) pick 8 bands x 16 rows at 0.85, which finds only ~80% of pairs at
        # Jaccard 0.9; weighting false negatives at 0.95 finds ~99% of them.
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.05, 0.95))
        sketches: dict[int, MinHash] = {}
        kept: list[int] = []
        for i in survivors:
            sketch = MinHash(num_perm=num_perm, seed=seed)
            sketch.update_batch(_shingles(normalized[i].split(), ngram))
            scored = [(sketches[j].jaccard(sketch), j) for j in lsh.query(sketch)]
            best = min(scored, key=lambda s: (-s[0], s[1]), default=None)
            if best is not None and best[0] >= threshold:
                removed.append(Removed(rows[i].origin, rows[best[1]].origin, "near", float(best[0])))
            else:
                lsh.insert(i, sketch)
                sketches[i] = sketch
                kept.append(i)
        survivors = kept

    return DedupResult(kept=[rows[i] for i in survivors], removed=removed)


def dedup_as_configured(rows: list[Row], text_of: Callable[[Row], str], data_cfg: Any,
                        exact: bool | None = None) -> DedupResult:
    """`dedup_rows` with a data section's `dedup` settings and seed (`exact` to override its exact pass)."""
    d = data_cfg.dedup
    return dedup_rows(rows, text_of, exact=d.exact if exact is None else exact, near=d.near, threshold=d.threshold,
                      num_perm=d.num_perm, seed=data_cfg.seed)


def write_removed(removed: list[Removed], path: Path) -> None:
    """One JSON object per removed row, so users can inspect each removed/kept pair."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for item in removed:
            fh.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
