"""`rayft data preference`: build preference pairs from an SFT dataset and a model.

Two ways, both writing rayft's `preference` format (plain strings for single-turn rows, a message
list for multi-turn ones):

- **reference vs the model** (default): for every example the model (the base, or a tuned
  adapter) answers the prompt once; the dataset's reference answer is `chosen`, the model's answer
  `rejected`. Off-policy for the chosen side: the policy never wrote those answers.
- **on-policy** (`samples >= 2`): the model samples N answers per prompt; a score ranks them and the
  best and the worst become `chosen` and `rejected` (both the policy's own words). The score is
  `rouge_l` (similarity to the row's reference answer), a reward function `module:function` (the
  signature of the RL stages' rewards; the row's answer arrives as `reference`), or a reward
  stage's folder (its reward model scores prompt + answer). Pairs whose best and worst score are
  within `min_gap` teach nothing and are skipped, and counted. With `greedy`, the model's greedy
  answer (what it says when served or evaluated) is one more candidate, so the chosen side is never
  worse than what the model already answers. Sampling is seeded (`seed`): the same command gives the
  same pairs, and another seed gives other samples of the same questions.

Pairs where the two sides agree (after normalization) or one is empty are skipped either way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rayft.core.errors import ModelError, UserError
from rayft.core.publish import write_text_atomic

if TYPE_CHECKING:
    from rayft.config.load import LoadedConfig
    from rayft.config.pipeline import Pipeline
    from rayft.schema.sections import DataConfig


SPLITS = ("train", "eval", "all")
ScoreFn = Callable[..., list[float]]


def build_preference_pairs(loaded: LoadedConfig, out: str | Path, adapter: str | None = None,
                           limit: int | None = None, split: str = "train", samples: int = 1,
                           score: str | None = None, temperature: float = 0.8,
                           min_gap: float = 0.0, greedy: bool = False, seed: int = 0) -> dict[str, Any]:
    """Pairs from the config's `split` rows: `train` (default) keeps the held-out questions out of
    the pairs, so that a DPO stage trained on them can still be evaluated on the SFT held-out set."""
    return build_pairs(loaded.pipeline, loaded.pipeline.stages[0].data, out, adapter, limit, split, samples, score,
                       temperature, min_gap, greedy, seed)


def build_pairs(cfg: Pipeline, data_cfg: DataConfig, out: str | Path, adapter: str | None = None,
                limit: int | None = None, split: str = "train", samples: int = 1, score: str | None = None,
                temperature: float = 0.8, min_gap: float = 0.0, greedy: bool = False, seed: int = 0,
                max_new_tokens: int | None = None) -> dict[str, Any]:
    """`build_preference_pairs` on any data section of a pipeline (a stage's, for on-policy pairs
    inside a run); answers are at most `max_new_tokens` (default `eval.max_new_tokens`) long."""
    from rayft.data.build import collect
    from rayft.data.templates import prompt_for_generation, render, resolve_template
    from rayft.generation.vllm_pool import chosen_engine
    from rayft.models.loader import load_tokenizer, resolve_model

    out = Path(out).expanduser().resolve()
    inputs = {Path(s.path).resolve() for s in data_cfg.source_list() if not s.path.startswith("hf:")}
    if out in inputs or any(out.is_relative_to(p) for p in inputs if p.is_dir()):
        raise UserError(f"--out: {out} is one of the input files; input files are never modified")
    if split not in SPLITS:
        raise UserError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    if samples < 1:
        raise UserError(f"--samples: {samples} must be at least 1")
    if samples == 1 and score:
        raise UserError("--score ranks sampled answers: it needs --samples 2 or more")
    if samples > 1 and not score:
        raise UserError("--samples: on-policy pairs need --score (rouge_l, module:function or a reward stage folder)")
    if greedy and samples < 2:
        raise UserError("--greedy adds the greedy answer to sampled ones: it needs --samples 2 or more")
    if temperature <= 0:
        raise UserError(f"--temperature: {temperature} must be greater than 0")
    score_fn = resolve_score(score) if score else None  # a bad --score fails before the model loads
    collected = collect(data_cfg)
    rows = {"train": collected.train, "eval": collected.eval, "all": collected.train + collected.eval}[split]
    examples = [e for e in rows if e["turns"]][:limit]
    if not examples:
        raise UserError(f"data.path: no {split} rows with an answer to build preference pairs from")
    model_path = resolve_model(cfg.model.name, cfg.model.revision)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code, cfg.model)
    templates = {f: resolve_template(data_cfg.template, f, tokenizer) for f in {e["_format"] for e in examples}}
    prompts = [prompt_for_generation(render(e, templates[e["_format"]], tokenizer)) for e in examples]
    done, started, total = [0], time.time(), len(prompts) * (samples + int(greedy))

    def progress(n: int) -> None:
        done[0] += n
        print(f"rayft: generated {done[0]}/{total} answers ({time.time() - started:.0f} s)", flush=True)

    if samples == 1:
        sampling = {"do_sample": cfg.eval.do_sample, "temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p}
    else:
        sampling = {"do_sample": True, "temperature": temperature, "top_p": cfg.eval.top_p}
    limit_tokens = max_new_tokens or cfg.eval.max_new_tokens
    engine = chosen_engine(cfg.generation)
    if engine == "vllm":
        texts, greedy_texts, tokens = _answers_on_vllm(cfg, model_path, adapter, tokenizer, prompts, samples,
                                                       greedy, seed, limit_tokens, sampling)
    else:
        texts, greedy_texts, tokens = _answers_on_hf(cfg, model_path, adapter, tokenizer, prompts, samples, greedy,
                                                     seed, {"max_new_tokens": limit_tokens,
                                                            "batch_size": cfg.eval.batch_size, "on_batch": progress},
                                                     sampling)
    if samples == 1:
        pairs, counts = _reference_pairs(examples, texts)
    else:
        candidates = [texts[i * samples:(i + 1) * samples] for i in range(len(examples))]
        pairs, counts = _ranked_pairs(examples, prompts, candidates, score_fn, min_gap, greedy_texts)
    if not pairs:
        raise UserError(_no_pairs_message(len(examples), samples, counts))
    write_jsonl_atomic(out, pairs)
    stats = {"examples": len(examples), "samples": samples, "score": score or "reference answer as chosen",
             "pairs": len(pairs), **counts, "out": str(out), "model": cfg.model.name, "adapter": adapter,
             "split": split, "seed": seed, "engine": engine, "output_tokens": tokens,
             "seconds": round(time.time() - started, 1)}
    if samples > 1:
        stats.update(temperature=temperature, greedy=greedy, min_gap=min_gap)
    print(f"rayft: {json.dumps(stats)}", flush=True)
    return stats


def _answers_on_hf(cfg: Pipeline, model_path: str, adapter: str | None, tokenizer: Any, prompts: list[str],
                   samples: int, greedy: bool, seed: int, options: dict[str, Any],
                   sampling: dict[str, Any]) -> tuple[list[str], list[str] | None, int]:
    """(`samples` answers per prompt, flat in prompt order; the greedy answers when asked; the tokens
    generated) with HF generate."""
    from transformers import set_seed

    from rayft.generation.hf import generate
    from rayft.models.adapters import load_for_inference

    model = load_for_inference(model_path, cfg.model, adapter)
    set_seed(seed)
    sampled = generate(model, tokenizer, [p for p in prompts for _ in range(samples)], **options, **sampling)
    greedy_gens = generate(model, tokenizer, prompts, **options) if greedy else []
    tokens = sum(g.new_tokens for g in sampled + greedy_gens)
    return [g.text for g in sampled], [g.text for g in greedy_gens] if greedy else None, tokens


def _answers_on_vllm(cfg: Pipeline, model_path: str, adapter: str | None, tokenizer: Any, prompts: list[str],
                     samples: int, greedy: bool, seed: int, max_new_tokens: int,
                     sampling: dict[str, Any]) -> tuple[list[str], list[str] | None, int]:
    """The same on vLLM engines: one engine start; each prompt's samples seeded by seed + its index."""
    from rayft.generation.vllm_pool import VLLMPool

    with VLLMPool(model_path, cfg.model, cfg.generation, [adapter] if adapter else []) as pool:
        print(f"rayft: generating {len(prompts) * samples} answers on vLLM ...", flush=True)
        sampled = pool.answer(tokenizer, prompts, adapter=adapter, samples=samples, seed=seed,
                              max_new_tokens=max_new_tokens, **sampling)
        greedy_gens = pool.answer(tokenizer, prompts, adapter=adapter, max_new_tokens=max_new_tokens) if greedy else None
    flat = [g for per_prompt in sampled for g in per_prompt]
    tokens = sum(g.new_tokens for g in flat) + sum(g[0].new_tokens for g in greedy_gens or [])
    return [g.text for g in flat], [g[0].text for g in greedy_gens] if greedy_gens else None, tokens


def _no_pairs_message(examples: int, samples: int, counts: dict[str, Any]) -> str:
    """Why no pair was made from `examples` prompts, and what to change (nothing is written)."""
    reasons = {"skipped_same_answer": "the model answered exactly the reference answer",
               "skipped_empty_answer": "the model's answer was empty",
               "skipped_tied": "the best and worst answers scored within --min-gap or were the same text",
               "skipped_too_few_answers": "fewer than two non-empty answers"}
    said = "; ".join(f"{counts[k]} prompt(s): {why}" for k, why in reasons.items() if counts.get(k))
    hint = ("sample more varied answers (--samples, --temperature, eval.max_new_tokens) or lower --min-gap"
            if samples > 1 else "use a model whose answers differ from the references (an earlier adapter), or "
            "on-policy pairs (--samples N --score S)")
    return f"no preference pairs from {examples} prompt(s), nothing written ({said or 'no prompts'}): {hint}"


def resolve_score(spec: str) -> ScoreFn:
    """`rouge_l`, `module:function`, or a reward stage's folder (or its adapter)."""
    from rayft.metrics.text import rouge_l
    from rayft.rl.reward_specs import resolve_reward

    if spec == "rouge_l":
        def similarity(prompts: list[str], completions: list[str], reference: list[str], **_: Any) -> list[float]:
            return [rouge_l(c, r) for c, r in zip(completions, reference)]
        return similarity
    if Path(spec).expanduser().is_dir():
        from rayft.models.reward_model import reward_model_fn

        try:
            return reward_model_fn(Path(spec).expanduser().resolve())
        except ModelError as exc:
            raise UserError(f"--score: {exc}") from None
    if spec.startswith("stage:"):
        raise UserError(f"--score: name the reward stage by its folder (e.g. runs/<run>/reward), not {spec!r}")
    if ":" not in spec:
        raise UserError(f"--score: {spec!r} is not rouge_l, a `module:function` reward or a reward stage folder")
    return resolve_reward(spec, field="--score")


def _reference_pairs(examples: list[dict[str, Any]], answers: list[str]) -> tuple[list[dict], dict[str, int]]:
    from rayft.data.dedup import normalize_text

    pairs, same, empty = [], 0, 0
    for example, answer in zip(examples, answers):
        reference = example["turns"][-1][1]
        if not answer.strip():
            empty += 1
        elif normalize_text(answer) == normalize_text(reference):
            same += 1
        else:
            pairs.append({**_prompt_field(example), "chosen": reference, "rejected": answer,
                          "source": example["_origin"]})
    return pairs, {"skipped_same_answer": same, "skipped_empty_answer": empty}


def _ranked_pairs(examples: list[dict[str, Any]], prompts: list[str], candidates: list[list[str]],
                  score_fn: ScoreFn, min_gap: float, greedy: list[str] | None = None
                  ) -> tuple[list[dict], dict[str, Any]]:
    """Best vs worst of each prompt's candidate answers (its samples, plus its greedy answer when
    `greedy` is given) by `score_fn`; empty answers never count."""
    from rayft.data.dedup import normalize_text

    if greedy is not None:
        candidates = [[*texts, answer] for texts, answer in zip(candidates, greedy)]
    kept = [(i, text) for i, texts in enumerate(candidates) for text in texts if text.strip()]
    scores = score_fn([prompts[i] for i, _ in kept], [t for _, t in kept],
                      reference=[examples[i]["turns"][-1][1] for i, _ in kept]) if kept else []
    if len(scores) != len(kept):
        raise UserError(f"--score: returned {len(scores)} scores for {len(kept)} answers")
    by_example: dict[int, list[tuple[float, str]]] = {}
    for (index, text), value in zip(kept, scores):
        by_example.setdefault(index, []).append((float(value), text))
    pairs, tied, too_few, greedy_sides = [], 0, 0, {"chosen": 0, "rejected": 0}
    chosen_scores, rejected_scores = [], []
    for index, example in enumerate(examples):
        ranked = sorted(by_example.get(index, []), key=lambda sv: sv[0], reverse=True)
        if len(ranked) < 2:  # fewer than two non-empty answers: nothing to rank
            too_few += 1
            continue
        (best, chosen), (worst, rejected) = ranked[0], ranked[-1]
        if best - worst <= min_gap or normalize_text(chosen) == normalize_text(rejected):
            tied += 1
            continue
        pairs.append({**_prompt_field(example), "chosen": chosen, "rejected": rejected, "chosen_score": best,
                      "rejected_score": worst, "source": example["_origin"]})
        chosen_scores.append(best)
        rejected_scores.append(worst)
        if greedy is not None:
            greedy_sides["chosen"] += chosen == greedy[index]
            greedy_sides["rejected"] += rejected == greedy[index]
    mean = (lambda xs: round(sum(xs) / len(xs), 4) if xs else None)
    counts = {"skipped_tied": tied, "skipped_too_few_answers": too_few,
              "mean_chosen_score": mean(chosen_scores), "mean_rejected_score": mean(rejected_scores)}
    if greedy is not None:  # how often the greedy answer was the best / the worst of its prompt
        counts.update(chosen_is_greedy=greedy_sides["chosen"], rejected_is_greedy=greedy_sides["rejected"])
    return pairs, counts


def _prompt_field(example: dict[str, Any]) -> dict[str, Any]:
    history, system = example["turns"][:-1], example.get("system")
    user = example["turns"][-1][0]
    if not history and not system:
        return {"prompt": user}
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"prompt": [*messages, {"role": "user", "content": user}]}


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
