"""Ratings from pairwise battles: a Bradley-Terry fit (choix) on the Elo scale, with bootstrap 95%
intervals and the win-rate matrix; as FastChat's leaderboard does it (ties as half a win each way,
maximum likelihood, one model anchored at 1000, 400 points = 10:1 odds)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

ELO_SCALE = 400.0 / math.log(10.0)  # natural-log strength -> Elo points
ANCHOR_RATING = 1000.0
ALPHA = 0.01  # choix's L2 regularisation: finite ratings when one model wins every battle


@dataclass(frozen=True)
class Battle:
    """One pair's verdict on one prompt: `winner` is "a", "b" or "tie"."""

    a: str
    b: str
    winner: str


def bradley_terry(names: list[str], battles: list[Battle], anchor: str) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry ratings, Elo-scaled, `anchor` at 1000."""
    import choix

    index = {n: i for i, n in enumerate(names)}
    data: list[tuple[int, int]] = []
    for battle in battles:
        a, b = index[battle.a], index[battle.b]
        if battle.winner == "a":
            data += [(a, b), (a, b)]
        elif battle.winner == "b":
            data += [(b, a), (b, a)]
        else:  # a tie is half a win each way
            data += [(a, b), (b, a)]
    if not data:
        return {n: ANCHOR_RATING for n in names}
    theta = choix.ilsr_pairwise(len(names), data, alpha=ALPHA)
    shift = theta[index[anchor]]
    return {n: ANCHOR_RATING + ELO_SCALE * float(theta[i] - shift) for n, i in index.items()}


def rate(names: list[str], battles: list[Battle], anchor: str, bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """Ratings, bootstrap 95% intervals (battles resampled with replacement), wins / losses / ties and
    the win-rate matrix (row beats column; ties count half)."""
    ratings = bradley_terry(names, battles, anchor)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(bootstrap if battles else 0):
        drawn = [battles[rng.randrange(len(battles))] for _ in battles]
        for name, value in bradley_terry(names, drawn, anchor).items():
            samples[name].append(value)
    rows = []
    for name in sorted(names, key=lambda n: -ratings[n]):
        won = sum(1 for b in battles if (b.a == name and b.winner == "a") or (b.b == name and b.winner == "b"))
        lost = sum(1 for b in battles if (b.a == name and b.winner == "b") or (b.b == name and b.winner == "a"))
        tied = sum(1 for b in battles if name in (b.a, b.b) and b.winner == "tie")
        low, high = _interval(samples[name]) if samples[name] else (None, None)
        rows.append({"model": name, "rating": ratings[name], "low": low, "high": high,
                     "wins": won, "losses": lost, "ties": tied})
    return {"anchor": anchor, "ratings": rows, "battles": len(battles), "bootstrap": bootstrap,
            "winrate": winrate_matrix(names, battles)}


def _interval(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]  # noqa: E731
    return pick(0.025), pick(0.975)


def winrate_matrix(names: list[str], battles: list[Battle]) -> dict[str, dict[str, float | None]]:
    score: dict[tuple[str, str], float] = {}
    count: dict[tuple[str, str], int] = {}
    for b in battles:
        points = {"a": 1.0, "b": 0.0, "tie": 0.5}[b.winner]
        for first, second, value in ((b.a, b.b, points), (b.b, b.a, 1.0 - points)):
            score[first, second] = score.get((first, second), 0.0) + value
            count[first, second] = count.get((first, second), 0) + 1
    return {r: {c: (score[r, c] / count[r, c] if count.get((r, c)) else None) for c in names} for r in names}
