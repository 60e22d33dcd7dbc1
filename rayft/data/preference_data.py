"""Datasets for the alignment stages, in TRL's standard (non-conversational) columns.

- `prepare_preference`: `prompt` (the templated prompt text), `chosen`, `rejected` (answer texts)
  for the reward model, DPO, ORPO, CPO and (unpaired) KTO.
- `prepare_prompts`: a `prompt` column plus the row's other text fields, for GRPO's rollouts.
- `unpair`: preference pairs -> KTO's `prompt` / `completion` / `label` rows.

The prompt is rendered with the same template as SFT (`resolve_template` / `render` /
`prompt_for_generation`), so a policy sees the same text in every stage; TRL appends EOS to the
answers and tokenizes prompt + answer itself. Rows come from `rayft.data.build.collect` (same
readers, dedup, split and source weights as SFT), and every row that is not used is counted.
"""

from __future__ import annotations

import random
from typing import Any

from rayft.schema.sections import DataConfig
from rayft.data.build import PreparedData, collect, prepared
from rayft.data.templates import prompt_for_generation, render, resolve_template
from rayft.core.errors import DataError


def prepare_preference(cfg: DataConfig, tokenizer: Any, stage: str = "this", drop_too_long: bool = False
                       ) -> PreparedData:
    """Preference pairs. Pairs longer than `cfg.max_length` tokens (prompt + longer answer + EOS)
    are counted as `too_long`; with `drop_too_long` (the reward model, whose TRL trainer would
    otherwise drop them silently) they are also removed here."""
    collected = collect(cfg)
    templates: dict[str, str] = {}
    train, train_stats = _pairs(collected.train, cfg, templates, tokenizer, stage, drop_too_long)
    held, eval_stats = _pairs(collected.eval, cfg, templates, tokenizer, stage, drop_too_long)
    if not train:
        raise DataError(f"data.path: no usable preference pairs for the {stage} stage ({train_stats})")
    return prepared(train, held, collected, templates, train_stats, eval_stats)


def prepare_prompts(cfg: DataConfig, tokenizer: Any, stage: str = "this") -> PreparedData:
    """Prompts for online RL: `prompt` (templated) plus the row's other text fields (which reach
    reward functions as keyword arguments) and `reference`, the row's own final answer."""
    collected = collect(cfg)
    templates: dict[str, str] = {}
    train, held = (_prompts(rows, cfg, templates, tokenizer) for rows in (collected.train, collected.eval))
    if not train:
        raise DataError(f"data.path: the {stage} stage needs rows with a prompt (any format but `text`); "
                        f"none found")
    train_stats = {"rows": len(train), "skipped_no_prompt": sum(1 for ex in collected.train if not ex["turns"])}
    eval_stats = {"rows": len(held), "skipped_no_prompt": sum(1 for ex in collected.eval if not ex["turns"])}
    return prepared(train, held, collected, templates, train_stats, eval_stats)


def unpair(dataset: Any, seed: int = 42) -> Any:
    """KTO's unpaired rows: each pair gives (prompt, chosen, True) and (prompt, rejected, False).
    Shuffled (seeded): KTO estimates its KL term from mismatched neighbours in a batch, which
    must not be the two halves of the same pair."""
    if dataset is None:
        return None
    from datasets import Dataset

    rows = []
    for item in dataset:
        rows.append({"prompt": item["prompt"], "completion": item["chosen"], "label": True})
        rows.append({"prompt": item["prompt"], "completion": item["rejected"], "label": False})
    random.Random(seed).shuffle(rows)
    return Dataset.from_list(rows)


def _template(ex: dict[str, Any], cfg: DataConfig, templates: dict[str, str], tokenizer: Any) -> str:
    if ex["_format"] not in templates:
        templates[ex["_format"]] = resolve_template(cfg.template, ex["_format"], tokenizer)
    return templates[ex["_format"]]


def _pairs(examples: list[dict[str, Any]], cfg: DataConfig, templates: dict[str, str], tokenizer: Any,
           stage: str, drop_too_long: bool) -> tuple[list[dict[str, str]], dict[str, Any]]:
    rows = []
    for ex in examples:
        if "rejected" not in ex:
            raise DataError(f"{ex['_origin']}: the {stage} stage needs preference rows with prompt/chosen/rejected "
                            f"(this row is format '{ex['_format']}'); set the stage's `data` to a preference "
                            "file, e.g. `stages: [{type: " + stage + ", data: {path: pairs.jsonl}}]`")
        prompt = prompt_for_generation(render(ex, _template(ex, cfg, templates, tokenizer), tokenizer))
        rows.append({"prompt": prompt, "chosen": ex["turns"][-1][1], "rejected": ex["rejected"]})
    lengths = _pair_lengths(rows, tokenizer)
    too_long = [n > cfg.max_length for n in lengths]
    kept = [r for r, long in zip(rows, too_long) if not (long and drop_too_long)]
    kept_lengths = [n for n, long in zip(lengths, too_long) if not (long and drop_too_long)]
    stats = {"rows": len(kept), "tokens": sum(lengths), "longest": min(max(kept_lengths, default=0), cfg.max_length),
             "too_long": sum(too_long), "too_long_action": "dropped" if drop_too_long else "truncated (keep start)"}
    return kept, stats


def _pair_lengths(rows: list[dict[str, str]], tokenizer: Any) -> list[int]:
    """Tokens of prompt + the longer answer + EOS, as TRL tokenizes them."""
    if not rows:
        return []
    eos = tokenizer.eos_token or ""
    texts = [r["prompt"] + r[side] + eos for r in rows for side in ("chosen", "rejected")]
    ids = tokenizer(texts)["input_ids"]
    return [max(len(ids[2 * i]), len(ids[2 * i + 1])) for i in range(len(rows))]


def _prompts(examples: list[dict[str, Any]], cfg: DataConfig, templates: dict[str, str], tokenizer: Any
             ) -> list[dict[str, Any]]:
    rows = []
    for ex in examples:
        if not ex["turns"]:
            continue
        # `completion` is the trainers' own column (the sampled text); the row's answer is `reference`.
        fields = {k: v for k, v in ex.items()
                  if isinstance(v, str) and not k.startswith("_") and k not in ("completion", "completion_ids")}
        fields.setdefault("reference", ex["turns"][-1][1])
        fields["prompt"] = prompt_for_generation(render(ex, _template(ex, cfg, templates, tokenizer), tokenizer))
        rows.append(fields)
    columns = {k: None for row in rows for k in row}  # mixed formats: every row gets every column
    return [{**columns, **row} for row in rows]
