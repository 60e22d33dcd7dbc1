"""`rayft data inspect`: what training will see, before spending compute on it.

Per stage: a table of rows read / skipped (by reason) / deduplicated / truncated / dropped,
token-length percentiles, and the padding fraction of each way to batch (pad to max_length,
dynamic padding, packing); then examples exactly as tokenized with the trained-on (answer) part
marked, and the first removed duplicate pairs.
"""

from __future__ import annotations

from typing import Any

from rayft.config.load import LoadedConfig
from rayft.data.tokenize import IGNORE_INDEX

PROMPT_STYLE, ANSWER_STYLE = "dim", "bold green"


def inspect_data(loaded: LoadedConfig, examples: int = 1, pairs: int = 5) -> dict[str, Any]:
    from rich.console import Console

    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.stages import get_stage

    console = Console()
    cfg = loaded.pipeline
    tokenizer = load_tokenizer(resolve_model(cfg.model.name, cfg.model.revision), cfg.model.trust_remote_code, cfg.model)
    report: dict[str, Any] = {}
    for stage in cfg.stages:
        data = get_stage(stage.type).prepare_data(stage, tokenizer)
        console.rule(f"stage {stage.name} ({stage.type})")
        report[stage.name] = _stage_report(data, stage)
        console.print(_table(report[stage.name]))
        if "input_ids" in data.train.column_names:
            for i in range(min(examples, len(data.train))):
                console.print(_rendered(tokenizer, data.train[i], i))
        elif {"prompt", "chosen", "rejected"} <= set(data.train.column_names):
            for i in range(min(examples, len(data.train))):
                console.print(_pair(data.train[i], i))
        for removed in data.removed[:pairs]:
            console.print(f"duplicate ({removed.kind}, {removed.similarity:.2f}): {removed.origin} "
                          f"repeats {removed.duplicate_of}")
        for problem in data.problems[:pairs]:
            console.print(f"skipped: {problem.detail}")
        for dropped in data.filtered[:pairs]:
            console.print(f"filtered ({dropped.filter}): {dropped.origin} {dropped.reason}", markup=False)
    return report


def _stage_report(data: Any, stage: Any) -> dict[str, Any]:
    from rayft.data.efficiency import length_percentiles, padding_fractions

    from rayft.data.accounting import account

    stats = data.stats
    train = stats.get("train", {})
    counts = account(stats)
    report: dict[str, Any] = {k: v for k, v in counts["lines"].items() if v or k in ("rows read", "trained on")}
    if not counts["adds_up"]:  # a bug in rayft, not in the data: say it rather than hide it
        report["COUNTS DO NOT ADD UP"] = "; ".join(counts["problems"])
    report["bad rows by reason"] = (stats.get("skipped_bad_rows") or {}).get("by_reason") or 0
    if stats.get("filtered"):
        report["filtered by filter"] = stats["filtered"]["by_filter"] or 0
    report["format / template"] = f"{stats.get('format')} / {stats.get('template')}"
    report["truncated"] = train.get("truncated", train.get("too_long", 0) if train.get("too_long_action") != "dropped" else 0)
    if "input_ids" in data.train.column_names and not stage.data.packing:
        lengths = [len(ids) for ids in data.train["input_ids"]]
        report["tokens per example"] = length_percentiles(lengths)
        fractions = padding_fractions(lengths, stage.training.batch_size, stage.data.max_length)
        report["padding: pad to max_length"] = f"{100 * fractions['pad_to_max_length']:.1f}%"
        report["padding: dynamic"] = f"{100 * fractions['dynamic']:.1f}%"
        report["padding: packing"] = f"{100 * fractions['packed']:.1f}% ({fractions['packed_rows']} packed rows)"
    return report


def _pair(row: dict[str, Any], index: int):
    """A preference pair as the stage trains on it: the templated prompt (dim), then each answer."""
    from rich.text import Text

    text = Text(f"pair {index + 1}: prompt as templated, then chosen and rejected answers\n", style="bold")
    text.append(row["prompt"], style=PROMPT_STYLE)
    text.append("\nchosen:   ", style="bold")
    text.append(row["chosen"], style=ANSWER_STYLE)
    text.append("\nrejected: ", style="bold")
    text.append(row["rejected"], style="bold red")
    return text


def _table(report: dict[str, Any]):
    from rich.table import Table

    table = Table(show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "0"
        table.add_row(key, str(value))
    return table


def _rendered(tokenizer: Any, row: dict[str, Any], index: int):
    from rich.text import Text

    text = Text(f"example {index + 1} ({len(row['input_ids'])} tokens; ")
    text.append("prompt: no loss", style=PROMPT_STYLE)
    text.append(", ")
    text.append("answer: trained on", style=ANSWER_STYLE)
    text.append(")\n")
    for token, label in zip(row["input_ids"], row["labels"]):
        text.append(tokenizer.decode([token]), style=ANSWER_STYLE if label != IGNORE_INDEX else PROMPT_STYLE)
    return text
