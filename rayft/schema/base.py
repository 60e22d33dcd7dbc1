"""The one base of every config section."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def compile_regex(value: str) -> re.Pattern:
    """A config's regular expression, or the ValueError pydantic reports under the field's name."""
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
