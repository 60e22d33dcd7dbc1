"""`rayft eval arena CONFIG`: every model of `eval.arena.models` answers the same prompts, the judge
decides every pair on every prompt (both orders, disagreement = tie), and a Bradley-Terry fit ranks
them on the Elo scale with bootstrap intervals (rayft.metrics.ratings). Outputs as `rayft eval`'s:
eval.json (`arena`: ratings, win rates, every verdict and answer), report.md, report.html and the
win-rate matrix picture."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayft.config.load import LoadedConfig
from rayft.core.errors import UserError
from rayft.data.prompt_files import read_prompt_file
from rayft.eval.compare import Comparison


@dataclass
class Contestant:
    label: str
    model_path: str | None = None  # a local model: its folder, and an adapter on it
    adapter: Path | None = None
    endpoint: Any = None  # an EndpointModel


def run_arena(loaded: LoadedConfig, out_dir: str | Path | None = None) -> Path:
    from rayft.eval.evaluate import write_outputs
    from rayft.eval.judges import make_judge
    from rayft.metrics.ratings import Battle, rate
    from rayft.models.loader import load_tokenizer, resolve_model
    from rayft.records.plots import plot_winrate

    cfg = loaded.pipeline
    arena = cfg.eval.arena
    if arena is None:
        raise UserError("eval.arena: not set; an arena needs `eval.arena: {models: {...}, judge: {...}}` "
                        "(docs/evaluation.md)")
    model_path = resolve_model(cfg.model.name, cfg.model.revision)
    contestants = [_contestant(label, spec, model_path) for label, spec in arena.models.items()]
    names = [c.label for c in contestants]
    anchor = arena.anchor if arena.anchor in names else names[0]
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code, cfg.model)
    prompts, questions = _prompts(loaded, tokenizer)
    judge = make_judge(arena.judge, cfg.eval.batch_size)  # a judge that cannot load fails before any answer
    if out_dir is None:
        stem = loaded.source.stem if loaded.source else "arena"
        out_dir = Path(cfg.storage.path) / f"arena-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from rayft.config.load import dump_yaml

    (out_dir / "config.yaml").write_text(dump_yaml(cfg))
    t0 = time.time()
    answers = _local_answers_on_vllm(contestants, loaded, tokenizer, prompts)
    answers.update({c.label: _answers(c, loaded, tokenizer, prompts) for c in contestants if c.label not in answers})
    pairs = list(itertools.combinations(names, 2))
    print(f"rayft: judging {len(pairs)} pairs x {len(prompts)} prompts in both orders with {judge.name} ...",
          flush=True)
    battles, verdicts = [], []
    for a, b in pairs:
        if hasattr(judge, "prepare"):
            judge.prepare(prompts * 2, answers[a] + answers[b])
        found = judge.verdicts([(q, p, x, y) for q, p, x, y in zip(questions, prompts, answers[a], answers[b])])
        battles += [Battle(a, b, w) for w in found]
        verdicts.append({"a": a, "b": b, "winners": found})
    result = rate(names, battles, anchor, arena.bootstrap, arena.seed)
    result.update(judge=judge.name, prompts=len(prompts), verdicts=verdicts, wall_s=round(time.time() - t0, 1),
                  picture=str(plot_winrate(result["winrate"], [r["model"] for r in result["ratings"]],
                                           out_dir / "eval_plots" / "arena_winrate.png")),
                  examples=[{"question": q, **{label: answers[label][i] for label in names}}
                            for i, q in enumerate(questions)])
    comparison = Comparison([], [], arena=result)
    if judge.unparsed:
        comparison.notes.append(f"arena: the judge gave no readable verdict ([[A]], [[B]] or [[C]]) {judge.unparsed} "
                                f"times; those count as ties")
    return write_outputs(out_dir, loaded, comparison)


def _contestant(label: str, spec: Any, model_path: str) -> Contestant:
    from rayft.records.rundir import stage_output

    if not isinstance(spec, str):
        return Contestant(label, endpoint=spec)
    if spec == "base":
        return Contestant(label, model_path)
    folder = Path(spec)
    if not folder.is_dir():
        raise UserError(f"eval.arena.models.{label}: {spec}: no such folder (or `base`, or {{endpoint, model}})")
    folder = stage_output(folder) or folder  # a run's stage folder -> its adapter/ or model/
    if (folder / "adapter_config.json").is_file():
        return Contestant(label, model_path, folder)
    if (folder / "config.json").is_file():
        return Contestant(label, str(folder))
    raise UserError(f"eval.arena.models.{label}: {spec} holds no adapter (adapter_config.json), model "
                    f"(config.json) or finished stage output (adapter/ or model/)")


def _prompts(loaded: LoadedConfig, tokenizer: Any) -> tuple[list[str], list[str]]:
    """(what the models are given, what the judge is shown)."""
    arena = loaded.pipeline.eval.arena
    if arena.prompts is None:
        from rayft.eval.compare import held_out

        held = held_out(loaded, tokenizer)
        prompts = held.prompts[: arena.num_prompts]
        return prompts, [p.strip() for p in prompts]
    questions = read_prompt_file(Path(arena.prompts))[: arena.num_prompts]
    if arena.chat_template and getattr(tokenizer, "chat_template", None):
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q in questions]
    else:
        prompts = list(questions)
    return prompts, questions


def _local_answers_on_vllm(contestants: list[Contestant], loaded: LoadedConfig, tokenizer: Any,
                           prompts: list[str]) -> dict[str, list[str]]:
    """With generation.engine vllm, the local contestants' answers (one engine start per base model)."""
    from rayft.generation.parallel import decoding
    from rayft.generation.vllm_pool import answer_models, chosen_engine

    cfg = loaded.pipeline
    jobs = [(c.label, c.model_path, c.adapter) for c in contestants if c.endpoint is None]
    if not jobs or chosen_engine(cfg.generation) != "vllm":
        return {}
    written, _, _ = answer_models(jobs, cfg.model, cfg.generation, tokenizer, prompts, **decoding(cfg.eval))
    return {label: [g[0].text for g in gens] for label, gens in written.items()}


def _answers(contestant: Contestant, loaded: LoadedConfig, tokenizer: Any, prompts: list[str]) -> list[str]:
    cfg = loaded.pipeline
    if contestant.endpoint is None:
        from rayft.generation.parallel import generate_answers

        gens = generate_answers(contestant.label, contestant.model_path, contestant.adapter, cfg.model, tokenizer,
                                prompts, cfg.eval)
        return [g.text for g in gens]
    return _endpoint_answers(contestant, prompts, cfg.eval)


def _endpoint_answers(contestant: Contestant, prompts: list[str], eval_cfg: Any) -> list[str]:
    """Completions from an OpenAI-compatible API, with the same prompts and decoding as local models."""
    import os

    import openai

    spec = contestant.endpoint
    key = os.environ.get(spec.api_key_env, "") if spec.api_key_env else "none"
    if spec.api_key_env and not key:
        raise UserError(f"eval.arena.models.{contestant.label}.api_key_env: {spec.api_key_env} is not set")
    client = openai.OpenAI(base_url=spec.endpoint, api_key=key, max_retries=2, timeout=300)
    print(f"rayft: asking {spec.model} at {spec.endpoint} for {len(prompts)} answers ...", flush=True)
    out = []
    for prompt in prompts:
        try:
            reply = client.completions.create(model=spec.model, prompt=prompt, max_tokens=eval_cfg.max_new_tokens,
                                              temperature=eval_cfg.temperature if eval_cfg.do_sample else 0.0,
                                              top_p=eval_cfg.top_p)
        except openai.OpenAIError as exc:
            raise UserError(f"eval.arena.models.{contestant.label}: {spec.endpoint} answered with an error: "
                            f"{exc}") from None
        out.append((reply.choices[0].text or "").strip())
    return out
