"""Benchmark-style exact match: the answer pulled out of a longer text by `eval.answer_pattern`
(a regex whose first group is the answer, e.g. GSM8K's `#### (\\S+)` or `The answer is (.+)`),
then normalized by `eval.normalize` steps, applied to reference and generation alike.

Steps, always applied in this order whatever order the config lists them in:
- `numbers`: "1,000" -> "1000", "$5" -> "5", "3.50" -> "3.5", "42.0" -> "42" (before punctuation goes);
- `squad`: the SQuAD script's normalization (lowercase, no punctuation, no articles, single spaces);
- `lowercase`; `strip`: surrounding whitespace and a trailing full stop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from rayft.metrics.text import normalize_answer

STEPS = ("numbers", "squad", "lowercase", "strip")
_NUMBER = re.compile(r"(?<![\w.])([-+]?)\$?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")


def normalize_numbers(text: str) -> str:
    def canonical(match: re.Match) -> str:
        sign, whole, fraction = match.group(1), match.group(2).replace(",", ""), match.group(3) or ""
        try:
            value = Decimal(sign + whole + fraction)
        except InvalidOperation:  # pragma: no cover - the pattern only matches numbers
            return match.group(0)
        if value == value.to_integral_value():
            return str(value.to_integral_value().copy_abs() if value == 0 else value.to_integral_value())
        return format(value.normalize(), "f")

    return _NUMBER.sub(canonical, text)


@dataclass(frozen=True)
class AnswerRule:
    pattern: str | None
    normalize: tuple[str, ...] = ("squad",)

    def extract(self, text: str) -> str | None:
        """The answer in `text`: the pattern's first group at its first match (None: no match);
        without a pattern, the whole text."""
        if self.pattern is None:
            return text
        match = re.search(self.pattern, text, flags=re.DOTALL)
        return match.group(1) if match else None

    def reference_answer(self, reference: str) -> str:
        """A reference the pattern does not match is its own answer (e.g. a bare "42")."""
        found = self.extract(reference)
        return reference if found is None else found

    def key(self, answer: str) -> str:
        for step in STEPS:
            if step not in self.normalize:
                continue
            if step == "numbers":
                answer = normalize_numbers(answer)
            elif step == "squad":
                answer = normalize_answer(answer)
            elif step == "lowercase":
                answer = answer.lower()
            else:
                answer = answer.strip().rstrip(".").strip()
        return answer

    def matches(self, prediction: str, reference: str) -> tuple[float, str | None, str]:
        """(exact match, the generation's answer or None, the reference's answer)."""
        got, want = self.extract(prediction), self.reference_answer(reference)
        return float(got is not None and self.key(got) == self.key(want)), got, want
