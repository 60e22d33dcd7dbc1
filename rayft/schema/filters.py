"""`data.filters`: rows dropped before training because of what they say (docs/data.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rayft.schema.base import Strict, compile_regex


class FilterConfig(Strict):
    name: str | None = Field(None, description="What the summary and `rayft data inspect` call this filter "
                             "(default: its kind, e.g. `contains`, `regex`, `length`, `repetition`).")
    field: Literal["any", "prompt", "answer", "rejected"] = Field(
        "any", description="Which text the filter reads: the prompt (every user turn and the system "
        "prompt), the answer (every assistant turn; a preference row's chosen answer), the rejected answer "
        "of a preference row, or `any` of them. A raw-text row's text counts as every field.")
    contains: list[str] = Field(default_factory=list, description="Drop a row whose text contains any of "
                                "these phrases (case-insensitive).")
    regex: str | None = Field(None, description="Drop a row whose text matches this regular expression "
                              "(Python `re.search`, case-sensitive unless it starts with `(?i)`).")
    min_chars: int | None = Field(None, ge=0, description="Drop a row whose text is shorter than this.")
    max_chars: int | None = Field(None, ge=1, description="Drop a row whose text is longer than this.")
    max_repetition: float | None = Field(None, gt=0, le=1, description="Drop a row whose text repeats "
                                         "itself: the share of its word n-grams that occurred earlier in it "
                                         "is above this (0.3 catches loops such as 'the cat the cat the cat').")
    ngram: int = Field(3, ge=1, le=10, description="n of max_repetition's word n-grams.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)
        return value

    @model_validator(mode="after")
    def _does_something(self) -> "FilterConfig":
        if not (self.contains or self.regex or self.min_chars is not None or self.max_chars is not None
                or self.max_repetition is not None):
            raise ValueError("a filter needs at least one of contains, regex, min_chars, max_chars, max_repetition")
        if self.contains and any(not p.strip() for p in self.contains):
            raise ValueError("contains: an empty phrase would match every row")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        kinds = [k for k, on in (("contains", bool(self.contains)), ("regex", self.regex is not None),
                                 ("length", self.min_chars is not None or self.max_chars is not None),
                                 ("repetition", self.max_repetition is not None)) if on]
        return "+".join(kinds) + ("" if self.field == "any" else f" ({self.field})")
