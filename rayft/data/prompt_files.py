"""Files of prompts: questions for the arena's models, instructions for a teacher model."""

from __future__ import annotations

import json
from pathlib import Path

from rayft.core.errors import UserError


def read_prompt_file(path: Path, field: str = "eval.arena.prompts") -> list[str]:
    """A .jsonl file (`prompt`, `instruction` or `question` per row) or plain text, one prompt per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{field}: cannot read {path}: {exc}") from None
    found = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            found.append(line.strip())
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not JSON ({exc.msg})") from None
        text = next((row.get(k) for k in ("prompt", "instruction", "question") if isinstance(row, dict)
                     and isinstance(row.get(k), str) and row.get(k).strip()), None)
        if text is None:
            raise UserError(f"{path}:{number}: no `prompt`, `instruction` or `question` text")
        found.append(text)
    if not found:
        raise UserError(f"{field}: {path} holds no prompt")
    return found
