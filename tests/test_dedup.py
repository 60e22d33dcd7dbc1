import json
import random
import time

from rayft.data.dedup import DedupResult, Removed, dedup_rows, normalize_text, write_removed
from rayft.data.readers import Row


def text_of(row: Row) -> str:
    return row.data["text"]


def rows_of(texts: list[str], file: str = "d.jsonl") -> list[Row]:
    return [Row({"text": t}, f"{file}:{i}") for i, t in enumerate(texts, start=1)]


def random_text(rng: random.Random, n_words: int, vocab_size: int = 5000) -> list[str]:
    return [f"w{rng.randrange(vocab_size)}" for _ in range(n_words)]


def test_normalize_text():
    assert normalize_text("  Hello,\tWORLD!!  ") == "hello world"
    assert normalize_text("ＦＵＬＬ　width") == "full width"  # NFKC: full-width letters and space
    assert normalize_text("Straße") == normalize_text("STRASSE")  # casefold, not lower
    assert normalize_text("pi is 3.14, don't panic") == "pi is 3.14 don't panic"  # inner kept
    assert normalize_text("a - b") == "a b"  # word of pure punctuation disappears
    assert normalize_text("x = 1") == "x = 1"  # symbols are not punctuation


def test_exact_duplicates_removed_first_kept():
    rows = rows_of(["Hello world.", "hello   WORLD", "Goodbye world", "«Hello, world!»"])
    result = dedup_rows(rows, text_of)
    assert [r.origin for r in result.kept] == ["d.jsonl:1", "d.jsonl:3"]
    assert result.removed == [
        Removed("d.jsonl:2", "d.jsonl:1", "exact", 1.0),
        Removed("d.jsonl:4", "d.jsonl:1", "exact", 1.0),
    ]
    assert result.stats() == {"exact_removed": 2, "near_removed": 0}


def test_distinct_rows_kept_in_order_and_exact_off():
    texts = ["one", "two", "three", "One"]
    assert [r.origin for r in dedup_rows(rows_of(texts[:3]), text_of).kept] == [
        "d.jsonl:1", "d.jsonl:2", "d.jsonl:3"]
    result = dedup_rows(rows_of(texts), text_of, exact=False)
    assert len(result.kept) == 4 and result.removed == []


def test_near_duplicate_removed_only_when_near_on():
    rng = random.Random(1)
    base = random_text(rng, 40)
    edited = base[:-1] + ["changed"]  # one word changed: 5-gram Jaccard 35/37 ~ 0.95
    other = random_text(rng, 40)
    rows = rows_of([" ".join(base), " ".join(other), " ".join(edited)])

    off = dedup_rows(rows, text_of)
    assert len(off.kept) == 3 and off.removed == []

    on = dedup_rows(rows, text_of, near=True)
    assert [r.origin for r in on.kept] == ["d.jsonl:1", "d.jsonl:2"]
    [item] = on.removed
    assert (item.origin, item.duplicate_of, item.kind) == ("d.jsonl:3", "d.jsonl:1", "near")
    assert 0.85 <= item.similarity < 1.0
    assert on.stats() == {"exact_removed": 0, "near_removed": 1}


def test_unrelated_texts_not_flagged():
    rng = random.Random(2)
    rows = rows_of([" ".join(random_text(rng, 40)) for _ in range(20)] + ["short", "tiny text"])
    result = dedup_rows(rows, text_of, near=True)
    assert result.removed == [] and len(result.kept) == 22


def test_threshold_respected():
    rng = random.Random(3)
    a = random_text(rng, 100)
    b = a[:60] + random_text(rng, 40)  # shares 56 of 5-grams: Jaccard 56/136 ~ 0.41..0.5
    rows = rows_of([" ".join(a), " ".join(b)])
    assert dedup_rows(rows, text_of, near=True, threshold=0.85).removed == []
    low = dedup_rows(rows, text_of, near=True, threshold=0.3)
    assert [r.kind for r in low.removed] == ["near"] and low.removed[0].similarity < 0.85


def test_near_picks_most_similar_kept_row():
    def words(lo: int, hi: int) -> str:
        return " ".join(f"w{i}" for i in range(lo, hi))

    # ngram=1 makes the shingles the word sets, so the Jaccards are easy to read:
    # J(A,B)=50/150 (both kept); C overlaps A by 80/120 and B by 70/130; D the other way round.
    rows = rows_of([words(0, 100), words(50, 150), words(20, 120), words(30, 130)])
    result = dedup_rows(rows, text_of, near=True, threshold=0.45, ngram=1, num_perm=256)
    assert [r.origin for r in result.kept] == ["d.jsonl:1", "d.jsonl:2"]
    assert [(r.origin, r.duplicate_of) for r in result.removed] == [
        ("d.jsonl:3", "d.jsonl:1"), ("d.jsonl:4", "d.jsonl:2")]


def test_deterministic():
    rng = random.Random(5)
    bases = [random_text(rng, 40) for _ in range(5)]
    texts = []
    for _ in range(60):  # variants with 0..8 edits: many borderline pairs around the threshold
        words = list(rng.choice(bases))
        for _ in range(rng.randrange(9)):
            words[rng.randrange(40)] = f"e{rng.randrange(1000)}"
        texts.append(" ".join(words))
    rows = rows_of(texts)
    first = dedup_rows(rows, text_of, near=True, threshold=0.5)
    second = dedup_rows(rows, text_of, near=True, threshold=0.5)
    assert first == second
    assert first.stats()["near_removed"] > 10 and first.stats()["exact_removed"] > 0


def test_write_removed_round_trips(tmp_path):
    removed = [Removed("a.jsonl:2", "a.jsonl:1", "exact", 1.0),
               Removed("b.csv:7", "a.jsonl:1", "near", 0.9140625)]
    path = tmp_path / "out" / "removed.jsonl"
    write_removed(removed, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [Removed(**json.loads(line)) for line in lines] == removed
    assert json.loads(lines[0]) == {"origin": "a.jsonl:2", "duplicate_of": "a.jsonl:1",
                                    "kind": "exact", "similarity": 1.0}


def test_planted_near_duplicates_found_at_scale():
    rng = random.Random(6)
    n_base, n_words = 1900, 150
    texts = [random_text(rng, n_words) for _ in range(n_base)]
    planted: dict[int, int] = {}  # row index of the copy -> index of its original
    for src in rng.sample(range(n_base), 100):  # distinct sources: each pair is unambiguous
        copy = list(texts[src])
        copy[rng.randrange(n_words)] = f"edit{rng.randrange(10**6)}"  # Jaccard ~ 141/151
        planted[len(texts)] = src
        texts.append(copy)
    order = list(range(len(texts)))
    rng.shuffle(order)
    rows = [Row({"text": " ".join(texts[i])}, f"s.jsonl:{i}") for i in order]

    start = time.perf_counter()
    result = dedup_rows(rows, text_of, near=True)
    assert time.perf_counter() - start < 10
    assert isinstance(result, DedupResult)

    position = {i: p for p, i in enumerate(order)}
    found = false = 0
    for item in result.removed:
        a, b = int(item.origin.split(":")[1]), int(item.duplicate_of.split(":")[1])
        pair = (planted.get(a) == b or planted.get(b) == a)
        found += pair
        false += not pair
        assert position[b] < position[a]  # the earlier row is the one kept
    assert found >= 95 and false <= 5
    assert len(result.kept) + len(result.removed) == len(rows)
    kept_positions = [position[int(r.origin.split(":")[1])] for r in result.kept]
    assert kept_positions == sorted(kept_positions)
