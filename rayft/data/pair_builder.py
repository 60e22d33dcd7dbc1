"""`rayft data preference`: build preference pairs from an SFT dataset and a model.

For every example, the model (the base, or a tuned adapter) answers the prompt; the dataset's
reference answer becomes `chosen` and the model's answer `rejected`. Pairs where the two agree
(after normalisation) teach nothing and are skipped, and counted. The output is rayft's
`preference` format: plain strings for single-turn rows, a message list for multi-turn ones.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rayft.config_io import LoadedConfig
from rayft.errors import UserError


SPLITS = ("train", "eval", "all")


def build_preference_pairs(loaded: LoadedConfig, out: str | Path, adapter: str | None = None,
                           limit: int | None = None, split: str = "train") -> dict[str, Any]:
    """Pairs from the config's `split` rows: `train` (default) keeps the held-out questions out of
    the pairs, so that a DPO stage trained on them can still be evaluated on the SFT held-out set."""
    from rayft.data.build import collect
    from rayft.data.dedup import normalise_text
    from rayft.data.templates import prompt_for_generation, render, resolve_template
    from rayft.eval.generate import generate
    from rayft.models.adapters import load_for_inference
    from rayft.models.loader import load_tokenizer, resolve_model

    cfg = loaded.pipeline
    data_cfg = cfg.stages[0].data
    out = Path(out).expanduser().resolve()
    inputs = {Path(s.path).resolve() for s in data_cfg.source_list() if not s.path.startswith("hf:")}
    if out in inputs or any(out.is_relative_to(p) for p in inputs if p.is_dir()):
        raise UserError(f"--out: {out} is one of the input files; input files are never modified")
    if split not in SPLITS:
        raise UserError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    collected = collect(data_cfg)
    rows = {"train": collected.train, "eval": collected.eval, "all": collected.train + collected.eval}[split]
    examples = [e for e in rows if e["turns"]][:limit]
    if not examples:
        raise UserError(f"data.path: no {split} rows with an answer to build preference pairs from")
    model_path = resolve_model(cfg.model.name, cfg.model.revision)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    templates = {f: resolve_template(data_cfg.template, f, tokenizer) for f in {e["_format"] for e in examples}}
    prompts = [prompt_for_generation(render(e, templates[e["_format"]], tokenizer)) for e in examples]
    model = load_for_inference(model_path, cfg.model, adapter)
    done = [0]
    started = time.time()

    def progress(n: int) -> None:
        done[0] += n
        print(f"rayft: generated {done[0]}/{len(prompts)} answers ({time.time() - started:.0f} s)", flush=True)

    gens = generate(model, tokenizer, prompts, max_new_tokens=cfg.eval.max_new_tokens,
                    batch_size=cfg.eval.batch_size, do_sample=cfg.eval.do_sample,
                    temperature=cfg.eval.temperature, top_p=cfg.eval.top_p, on_batch=progress)
    pairs, skipped_same, skipped_empty = [], 0, 0
    for example, gen in zip(examples, gens):
        reference = example["turns"][-1][1]
        if not gen.text.strip():
            skipped_empty += 1
        elif normalise_text(gen.text) == normalise_text(reference):
            skipped_same += 1
        else:
            pairs.append({**_prompt_field(example), "chosen": reference, "rejected": gen.text,
                          "source": example["_origin"]})
    _write_jsonl_atomic(out, pairs)
    stats = {"examples": len(examples), "pairs": len(pairs), "skipped_same_answer": skipped_same,
             "skipped_empty_answer": skipped_empty, "out": str(out), "model": cfg.model.name,
             "adapter": adapter, "split": split, "seconds": round(time.time() - started, 1)}
    print(f"rayft: {json.dumps(stats)}", flush=True)
    return stats


def _prompt_field(example: dict[str, Any]) -> dict[str, Any]:
    history, system = example["turns"][:-1], example.get("system")
    user = example["turns"][-1][0]
    if not history and not system:
        return {"prompt": user}
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"prompt": [*messages, {"role": "user", "content": user}]}


def _write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    os.replace(tmp, path)
