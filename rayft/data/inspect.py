"""`rayft data inspect`: what training will see, before spending compute on it.

Prints each stage's data stats (rows, dedup, truncation, packing) and a few examples exactly as
tokenised, with the trained-on (answer) part marked, plus the first removed duplicate pairs.
"""

from __future__ import annotations

from typing import Any

from rayft.config_io import LoadedConfig
from rayft.data.tokenize import IGNORE_INDEX

PROMPT_STYLE, ANSWER_STYLE = "dim", "bold green"


def inspect_data(loaded: LoadedConfig, examples: int = 2, pairs: int = 5) -> dict[str, Any]:
    from rich.console import Console
    from rich.text import Text

    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.stages import get_stage

    console = Console()
    cfg = loaded.pipeline
    tokenizer = load_tokenizer(resolve_model(cfg.model.name, cfg.model.revision), cfg.model.trust_remote_code)
    report: dict[str, Any] = {}
    for stage in cfg.stages:
        data = get_stage(stage.type).prepare_data(stage, tokenizer)
        report[stage.name] = data.stats
        console.rule(f"stage {stage.name} ({stage.type})")
        console.print_json(data=data.stats)
        for i in range(min(examples, len(data.train))):
            row = data.train[i]
            text = Text(f"example {i + 1} ({len(row['input_ids'])} tokens; ")
            text.append("prompt: no loss", style=PROMPT_STYLE)
            text.append(", ")
            text.append("answer: trained on", style=ANSWER_STYLE)
            text.append(")\n")
            for token, label in zip(row["input_ids"], row["labels"]):
                piece = tokenizer.decode([token])
                text.append(piece, style=ANSWER_STYLE if label != IGNORE_INDEX else PROMPT_STYLE)
            console.print(text)
        for removed in data.removed[:pairs]:
            console.print(f"duplicate ({removed.kind}, {removed.similarity:.2f}): {removed.origin} "
                          f"repeats {removed.duplicate_of}")
    return report
