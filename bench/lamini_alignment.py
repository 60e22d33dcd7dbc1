"""Held-out quality of the embedded model on the Lamini docs: base, SFT, SFT -> DPO (reference
pairs, plain and with RPO), SFT -> on-policy pairs + RPO (built by hand, or inside the run as
jobs/configs/dpo_lamini.yaml ships), ORPO from scratch.

Every arm uses the repository's own configs and commands:

1. LoRA SFT of SmolLM2-135M-Instruct (jobs/configs/sft_lamini.yaml, 2 Ray workers);
2. `dpo`: reference pairs from the SFT model (`rayft data preference`, training rows only, so the
   held-out questions stay unseen): reference answer = chosen, SFT answer = rejected; DPO from the
   SFT adapter (jobs/configs/dpo_lamini.yaml's DPO settings, lr --dpo-lr); `rpo`: the same pairs,
   DPO + RPO's SFT term on the chosen answers (`rpo_alpha`);
3. `recipe`: on-policy pairs (`rayft data preference --samples N --score rouge_l`: the SFT model
   samples N answers per question; the one closest to the reference answer is chosen, the farthest
   rejected; `--greedy`, `--min-gap`, `--rejected greedy` vary it), then DPO with RPO's SFT term
   (`rpo_alpha`) from the SFT adapter;
4. `online`: jobs/configs/dpo_lamini.yaml as it ships, from the SFT adapter: the DPO stage builds
   its on-policy pairs inside the run (`pairs:`), then trains (its own lr and epochs);
5. `orpo`: ORPO from the base model (no SFT) on reference pairs answered by the base model;

then `rayft eval`'s comparison of all of them on the same held-out Lamini questions (the SFT
config's seeded 10% split, or --eval-split, never trained on): ROUGE-L, exact match, BLEU, answer loss, greedy
decoding, and a paired bootstrap interval of each arm's ROUGE-L gain over SFT. Every step is kept
in --keep and skipped when a later run finds it done (a long run can be resumed). On a 2-core
CPU the full-size run takes hours; the flags make it smaller (the figures say what was run).
Writes bench/results/lamini_alignment.json and its section of docs/benchmarks.md.

    RAYFT_HOME=... .venv/bin/python bench/lamini_alignment.py [--sft-steps N] [--pairs 400]
        [--samples 4] [--dpo-steps N] [--dpo-lr 5e-5] [--rpo-alpha 1.0] [--eval-examples 120] [--max-new-tokens 96]
        [--eval-split 0.1] [--arms dpo rpo recipe online orpo] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from docs_section import write_section  # noqa: E402

SFT_CONFIG = REPO / "jobs" / "configs" / "sft_lamini.yaml"
DPO_CONFIG = REPO / "jobs" / "configs" / "dpo_lamini.yaml"
DATA = REPO.parent / "shared" / "data" / "lamini_docs.jsonl"
ARMS = ("dpo", "rpo", "recipe", "online", "orpo")


def _summary(stage: Path) -> dict:
    return json.loads((stage / "summary.json").read_text())


def _steps(flag: int | None) -> list[str]:
    return [f"training.max_steps={flag}"] if flag else []


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sft-steps", type=int, help="cap the SFT stage (default: one epoch)")
    parser.add_argument("--pairs", type=int, default=400, help="training questions turned into preference pairs")
    parser.add_argument("--samples", type=int, default=4, help="answers sampled per question for on-policy pairs")
    parser.add_argument("--dpo-steps", type=int, help="cap each preference stage (default: one epoch over its pairs)")
    parser.add_argument("--rpo-alpha", type=float, default=1.0, help="the recipe's SFT-term weight")
    parser.add_argument("--min-gap", type=float, default=0.0,
                        help="recipe: keep pairs whose ROUGE-L gap exceeds this (`rayft data preference --min-gap`)")
    parser.add_argument("--greedy", action="store_true",
                        help="recipe: the SFT model's greedy answer is one more candidate (`rayft data preference --greedy`)")
    parser.add_argument("--seed", type=int, default=0, help="recipe: sampling seed (`rayft data preference --seed`)")
    parser.add_argument("--merge-pairs", metavar="NAME",
                        help="recipe: an earlier on-policy pairs file in --keep (NAME.jsonl, same questions, other "
                        "seed) whose chosen and rejected answers join the candidates: best and worst over both, "
                        "as sampling both sets at once would give")
    parser.add_argument("--rejected", choices=("worst", "greedy"), default="worst",
                        help="recipe: the rejected side is the worst candidate, or the SFT model's greedy answer "
                        "(pairs only where the best candidate beats it by more than --min-gap)")
    parser.add_argument("--dpo-lr", type=float, default=5e-5,
                        help="learning rate of the dpo / rpo / recipe arms (jobs/configs/dpo_lamini.yaml: 5e-5)")
    parser.add_argument("--eval-examples", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=1,
                        help="online: rounds of generate -> pair -> DPO (the shipped stage repeated)")
    parser.add_argument("--eval-split", type=float,
                        help="held-out share of the Lamini rows for every arm (the configs' data.eval_split: 0.1)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--keep", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent", flush=True)
        return 0
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ["RAY_ADDRESS"] = "local"
    import ray

    from rayft.config.load import load_pipeline
    from rayft.eval.evaluate import evaluate_config
    from rayft.train.launch import run_pipeline

    storage = Path(args.keep or tempfile.mkdtemp(prefix="rayft-bench-lamini-")).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    common = [f"storage.path={storage}", "eval.enabled=false",
              *([f"data.eval_split={args.eval_split}"] if args.eval_split else [])]
    split = f"-split{args.eval_split:g}" if args.eval_split else ""  # in the name of what depends on the split
    seconds: dict[str, float] = {}
    ray.init(num_cpus=2, logging_level="ERROR")

    def timed(name: str, fn):
        started = time.time()
        out = fn()
        seconds[name] = round(seconds.get(name, 0.0) + time.time() - started, 1)
        return out

    sft_stage = storage / f"sft-lamini{split}" / "sft"
    timed("sft", lambda: run_pipeline(load_pipeline(str(SFT_CONFIG), [*common, f"run_name=sft-lamini{split}",
                                                                     *_steps(args.sft_steps)])))
    sft_loaded = load_pipeline(str(SFT_CONFIG), [*common, f"eval.max_new_tokens={args.max_new_tokens}"])
    pairs, stages = {}, {"sft": sft_stage}

    def preference_arm(arm: str, pairs_file: str, build, stage: dict, sets: list[str]) -> None:
        """Build the arm's pairs (once per pairs setting), then train its one preference stage (a run
        named by the arm, its pairs and its training settings, so a different setting never reuses it)."""
        pairs_path = storage / f"{pairs_file}.jsonl"
        pairs[arm] = timed(f"{arm} pairs", lambda: _pairs(pairs_path, build))
        run = f"{arm}-{pairs_file}" + ("" if stage["type"] == "orpo" else f"-lr{args.dpo_lr:g}") + \
            (f"-s{args.dpo_steps}" if args.dpo_steps else "")
        stages[arm] = storage / run / stage["type"]
        lr = [] if stage["type"] == "orpo" else [f"training.lr={args.dpo_lr}"]
        timed(arm, lambda: run_pipeline(load_pipeline(str(DPO_CONFIG), [
            *common, f"run_name={run}", f"data.path={pairs_path}", "data.format=preference",
            f"stages=[{json.dumps(stage)}]", *sets, *lr, *_steps(args.dpo_steps)])))

    from rayft.datatools.pair_builder import build_preference_pairs

    sft_adapter = str(sft_stage / "adapter")
    from_sft = [f"adapter.init_from={sft_adapter}"]
    answers = f"q{args.pairs}-t{args.max_new_tokens}{split}"  # what a pairs file depends on, in its name

    def reference_pairs(out: Path) -> dict:  # reference answer = chosen, the SFT model's answer = rejected
        return build_preference_pairs(sft_loaded, out, adapter=sft_adapter, limit=args.pairs)

    dpo = {"type": "dpo", "beta": 0.1, "loss_type": "sigmoid"}
    if "dpo" in args.arms:  # jobs/configs/dpo_lamini.yaml as it ships, on reference pairs
        preference_arm("dpo", f"reference-pairs-{answers}", reference_pairs, dpo, from_sft)
    if "rpo" in args.arms:  # the same reference pairs, DPO + RPO's SFT term on the chosen (reference) answers
        preference_arm("rpo", f"reference-pairs-{answers}", reference_pairs, {**dpo, "rpo_alpha": args.rpo_alpha},
                       from_sft)
    if "recipe" in args.arms:  # on-policy pairs ranked by ROUGE-L to the reference, DPO + RPO
        onpolicy = f"onpolicy-pairs-{answers}-n{args.samples}" + ("-greedy" if args.greedy else "") + \
            (f"-seed{args.seed}" if args.seed else "")

        def onpolicy_pairs(out: Path) -> dict:
            return build_preference_pairs(sft_loaded, out, adapter=sft_adapter, limit=args.pairs,
                                          samples=args.samples, score="rouge_l", greedy=args.greedy, seed=args.seed)

        pool = onpolicy
        if args.merge_pairs:
            pool = f"{onpolicy}-plus-{args.merge_pairs}"
            _pairs(storage / f"{pool}.jsonl", lambda out: _merged(
                storage / f"{args.merge_pairs}.jsonl", storage / f"{onpolicy}.jsonl", onpolicy_pairs, out))

        def gapped_pairs(out: Path) -> dict:
            """The pool's pairs whose gap exceeds --min-gap: what `rayft data preference --min-gap`
            keeps from the same samples, without sampling them again."""
            stats = _pairs(storage / f"{pool}.jsonl", onpolicy_pairs)
            rows = [json.loads(line) for line in (storage / f"{pool}.jsonl").read_text().splitlines()]
            kept = [r for r in rows if r["chosen_score"] - r["rejected_score"] > args.min_gap]
            out.write_text("".join(json.dumps(r) + "\n" for r in kept))
            return {**stats, "pairs": len(kept), "min_gap": args.min_gap, "out": str(out),
                    "skipped_tied": stats["skipped_tied"] + len(rows) - len(kept)}

        def against_greedy(out: Path) -> dict:
            """The pool's best answers against the SFT model's greedy ones (those of the reference
            pairs' builder run, whose rejected side is the greedy answer), where the best beats the
            greedy answer by more than --min-gap."""
            from rayft.metrics.text import rouge_l

            stats = _pairs(storage / f"{pool}.jsonl", onpolicy_pairs)
            greedy_file = storage / f"reference-pairs-{answers}.jsonl"
            _pairs(greedy_file, reference_pairs)
            greedy = {json.dumps(r["prompt"]): r for r in map(json.loads, greedy_file.read_text().splitlines())}
            kept = []
            for row in map(json.loads, (storage / f"{pool}.jsonl").read_text().splitlines()):
                answer = greedy.get(json.dumps(row["prompt"]))
                if answer is None:  # the greedy answer was the reference itself, or empty
                    continue
                score = rouge_l(answer["rejected"], answer["chosen"])
                if row["chosen_score"] - score > args.min_gap:
                    kept.append({**row, "rejected": answer["rejected"], "rejected_score": score})
            out.write_text("".join(json.dumps(r) + "\n" for r in kept))
            return {**stats, "pairs": len(kept), "min_gap": args.min_gap, "rejected": "greedy answer", "out": str(out),
                    "mean_rejected_score": round(sum(r["rejected_score"] for r in kept) / max(1, len(kept)), 4),
                    "mean_chosen_score": round(sum(r["chosen_score"] for r in kept) / max(1, len(kept)), 4)}

        if args.rejected == "greedy":
            preference_arm("recipe", f"{pool}-vs-greedy-gap{args.min_gap:g}", against_greedy,
                           {**dpo, "rpo_alpha": args.rpo_alpha}, from_sft)
        else:
            preference_arm("recipe", pool + (f"-gap{args.min_gap:g}" if args.min_gap else ""),
                           gapped_pairs if args.min_gap else onpolicy_pairs, {**dpo, "rpo_alpha": args.rpo_alpha},
                           from_sft)
    if "online" in args.arms:  # jobs/configs/dpo_lamini.yaml as it ships: its pairs built inside the run
        run = f"online{split}"
        shipped = load_pipeline(str(DPO_CONFIG)).pipeline.stages[0].model_dump(mode="json", exclude={"data", "training"})
        rounds = [{**shipped, "name": "dpo" if k == 1 else f"dpo{k}"} for k in range(1, args.rounds + 1)]
        more = [f"stages={json.dumps(rounds)}"] if args.rounds > 1 else []  # round k samples from round k-1
        timed("online", lambda: run_pipeline(load_pipeline(str(DPO_CONFIG), [*common, f"run_name={run}", *from_sft,
                                                                            *more])))
        for k, stage in enumerate(rounds, 1):
            label = "online" if k == 1 else f"online{k}"
            stages[label] = storage / run / stage["name"]
            pairs[label] = _summary(stages[label])["pairs"]
    if "orpo" in args.arms:  # one stage from the base: pairs from the base model's own answers
        preference_arm("orpo", f"base-pairs-{answers}", lambda out: build_preference_pairs(
            sft_loaded, out, limit=args.pairs), {"type": "orpo", "beta": 0.1},
            ["adapter.init_from=null", "training.lr=5e-4"])
    ray.shutdown()

    eval_dir = storage / (f"eval-{args.eval_examples}-{args.max_new_tokens}-" + "-".join(
        sorted(f"{arm}.{path.parent.name}" for arm, path in stages.items())))
    models = ", ".join(f"{k}: '{v}'" for k, v in stages.items())
    eval_loaded = load_pipeline(str(SFT_CONFIG), [
        *common, f"eval.models={{{models}}}", f"eval.num_examples={args.eval_examples}",
        f"eval.max_new_tokens={args.max_new_tokens}"])
    if not (eval_dir / "eval.json").is_file():
        timed("eval", lambda: evaluate_config(eval_loaded, eval_dir))
    report = json.loads((eval_dir / "eval.json").read_text())
    from rayft.metrics.text import paired_bootstrap

    per = {label: [e[label]["rouge_l"] for e in report["examples"]] for label in ("base", *stages)}
    gains = {label: paired_bootstrap(per["sft"], per[label]) for label in per if label != "sft"}
    summaries = {arm: _summary(stage) for arm, stage in stages.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
        "command": "RAYFT_HOME=/tmp/rh .venv/bin/python bench/lamini_alignment.py"
                   + (f" --sft-steps {args.sft_steps}" if args.sft_steps else "")
                   + f" --pairs {args.pairs} --samples {args.samples}"
                   + (f" --dpo-steps {args.dpo_steps}" if args.dpo_steps else "") + f" --dpo-lr {args.dpo_lr:g}"
                   + f" --rpo-alpha {args.rpo_alpha}" + (f" --min-gap {args.min_gap:g}" if args.min_gap else "")
                   + (" --greedy" if args.greedy else "") + (f" --seed {args.seed}" if args.seed else "")
                   + (f" --merge-pairs {args.merge_pairs}" if args.merge_pairs else "")
                   + (f" --rejected {args.rejected}" if args.rejected != "worst" else "")
                   + f" --eval-examples {args.eval_examples}"
                   + (f" --eval-split {args.eval_split:g}" if args.eval_split else "")
                   + (f" --rounds {args.rounds}" if args.rounds > 1 else "")
                   + f" --max-new-tokens {args.max_new_tokens} --arms {' '.join(args.arms)}",
        "steps": {arm: s.get("global_step") for arm, s in summaries.items()}, "pairs": pairs,
        "dpo_lr": args.dpo_lr, "eval_split": args.eval_split or 0.1,
        "preference_eval": {arm: {k: s.get(k) for k in ("eval_rewards/accuracies", "eval_rewards/margins",
                                                         "eval_loss")} for arm, s in summaries.items() if arm != "sft"},
        "logps": {arm: _logps_trend(s) for arm, s in summaries.items() if arm != "sft"},
        "metrics": report["metrics"], "rouge_l_gain_over_sft": gains, "seconds": seconds, "runs": str(storage),
    }
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "lamini_alignment.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("steps", "rouge_l_gain_over_sft", "seconds")}), flush=True)
    write_section(REPO / "docs" / "benchmarks.md", "lamini_alignment", _body(result))
    return 0


def _pairs(out: Path, build) -> dict:
    """Build a pairs file once; a later run reads the stats written beside it."""
    stats_file = out.with_suffix(".stats.json")
    if out.is_file() and stats_file.is_file():
        return json.loads(stats_file.read_text())
    stats = build(out)
    stats_file.write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def _merged(earlier: Path, fresh: Path, build, out: Path) -> dict:
    """Best and worst of each question's answers over two on-policy pairs files (the fresh one built
    first): a file keeps each question's best and worst candidate, so the best and worst over both
    files are those of all their candidates together."""
    stats = _pairs(fresh, build)
    candidates: dict[str, list[tuple[float, str]]] = {}
    rows: dict[str, dict] = {}
    for path in (fresh, earlier):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            key = json.dumps(row["prompt"])
            rows.setdefault(key, row)
            candidates.setdefault(key, []).extend(
                [(row["chosen_score"], row["chosen"]), (row["rejected_score"], row["rejected"])])
    merged = []
    for key, row in rows.items():
        ranked = sorted(candidates[key], key=lambda sv: sv[0], reverse=True)
        (best, chosen), (worst, rejected) = ranked[0], ranked[-1]
        merged.append({**row, "chosen": chosen, "rejected": rejected, "chosen_score": best, "rejected_score": worst})
    out.write_text("".join(json.dumps(r) + "\n" for r in merged))
    mean = (lambda xs: round(sum(xs) / len(xs), 4))
    stats = {k: v for k, v in stats.items() if k not in ("chosen_is_greedy", "rejected_is_greedy")}  # fresh file's
    return {**stats, "pairs": len(merged), "samples": f"{stats['samples']} + those of {earlier.name}",
            "mean_chosen_score": mean([r["chosen_score"] for r in merged]),
            "mean_rejected_score": mean([r["rejected_score"] for r in merged]), "out": str(out)}


def _logps_trend(summary: dict) -> dict | None:
    """First and last logged chosen / rejected log-probs of a preference stage (TRL's logs)."""
    history = summary.get("preference_history") or []
    if not history:
        return None
    return {"first": {k: history[0].get(k) for k in ("step", "logps_chosen", "logps_rejected")},
            "last": {k: history[-1].get(k) for k in ("step", "logps_chosen", "logps_rejected")}}


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _settings(r: dict) -> str:
    """What each arm of the run trained with."""
    by_hand = [arm for arm in r["pairs"] if arm in ("dpo", "rpo", "recipe")]
    parts = [f"{', '.join(f'`{a}`' for a in by_hand)} with `jobs/configs/dpo_lamini.yaml`'s DPO settings (beta 0.1), "
             f"lr {r['dpo_lr']:g}"] if by_hand else []
    if any(arm.startswith("online") for arm in r["pairs"]):
        parts.append("`online`: `jobs/configs/dpo_lamini.yaml` as it ships (beta 0.1, RPO 1.0, lr 2e-4, 2 epochs)")
    if "orpo" in r["pairs"]:
        parts.append("`orpo`: lr 5e-4")
    return "; ".join(parts)


def _body(r: dict) -> str:
    gains = r["rouge_l_gain_over_sft"]
    rows = "\n".join(
        f"| {m['model']} | {m['n']} | {_fmt(m['rouge_l'])} | "
        + (f"{gains[m['model']]['mean_diff']:+.3f} [{gains[m['model']]['low']:+.3f}, {gains[m['model']]['high']:+.3f}]"
           if m["model"] in gains else "(baseline)")
        + f" | {_fmt(m['exact_match'])} | {_fmt(m['bleu'])} | {_fmt(m['loss'])} | "
        f"{', '.join(f'{k} {v}' for k, v in sorted(m['tags'].items())) or 'none'} |"
        for m in r["metrics"])
    arms = []
    for arm, p in r["pairs"].items():
        ev, lp = r["preference_eval"].get(arm, {}), r["logps"].get(arm)
        trend = (f"chosen log-prob {lp['first']['logps_chosen']:.1f} -> {lp['last']['logps_chosen']:.1f}, rejected "
                 f"{lp['first']['logps_rejected']:.1f} -> {lp['last']['logps_rejected']:.1f}") if lp else "no log"
        gap = (" + the greedy answer" if p.get("greedy") else "") + \
            (f", ROUGE-L gap > {p['min_gap']:g}" if p.get("min_gap") else "")
        arms.append(f"- `{arm}`: {p['pairs']} pairs from {p['examples']} questions ({p['score']}{gap}, {p['samples']} "
                    f"sample(s) each), {r['steps'].get(arm)} steps; held-out pairs: reward accuracy "
                    f"{_fmt(ev.get('eval_rewards/accuracies'))}, margin {_fmt(ev.get('eval_rewards/margins'))}; "
                    f"{trend} (first to last logged step).")
    s = r["seconds"]
    return f"""## Alignment quality on the Lamini docs: base, SFT, SFT -> DPO, SFT -> recipe, ORPO (embedded model)

SmolLM2-135M-Instruct, LoRA r 16, 2 Ray workers on CPU. SFT (`jobs/configs/sft_lamini.yaml`) ran
{r['steps'].get('sft')} optimizer steps. Preference arms: {_settings(r)}:

{chr(10).join(arms)}

Held-out: the first {r['metrics'][0]['n']} questions of the seeded {r.get('eval_split', 0.1):g} held-out split, never
trained on by any arm; greedy decoding. ROUGE-L gain: mean of (arm - SFT) over the same rows with
a 95% paired bootstrap interval (10,000 resamples). Answer loss: teacher-forced on the reference
answer tokens.

| model | n | ROUGE-L | ROUGE-L gain over SFT [95% CI] | exact match | BLEU | answer loss | error tags |
|---|---|---|---|---|---|---|---|
{rows}

Wall time (s): {', '.join(f'{k} {v:.0f}' for k, v in s.items())}, on {r['machine']} (a resumed
run counts only what it ran), with the command:

    {r['command']}
"""


if __name__ == "__main__":
    raise SystemExit(main())
