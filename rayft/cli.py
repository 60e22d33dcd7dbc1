"""`rayft` command line: parse arguments, load the config, call the library. Nothing else.

Exit codes: 0 success, 2 user error (message names the field or file:line), 1 a failed run.
`--debug` adds the traceback of the library error behind a user error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from rayft.core.errors import UserError


def _config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    if required:
        p.add_argument("config", help="the run's YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set training.lr=1e-4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayft", description="Fine-tune, align, sweep and serve LLMs on Ray.")
    parser.add_argument("--version", action="version", version=f"rayft {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, also print the traceback of the library error behind it")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    train = verbs.add_parser("train", help="run a config's training stages on Ray Train")
    _config_args(train)
    train.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    train.add_argument("--run-name", help="run directory name (overrides run_name)")
    train.add_argument("--force", action="store_true", help="run a stage whose memory estimate is over what its "
                       "workers can have (see `rayft plan`)")
    train.set_defaults(handler=_train)

    plan = verbs.add_parser("plan", help="each stage's peak memory per worker (weights, gradients, optimizer, "
                            "activations), estimated before a run, against what the workers will get")
    _config_args(plan)
    plan.add_argument("--address", help="the Ray cluster the run will use (its workers' memory is not known "
                      "before the run; without it: this machine)")
    plan.set_defaults(handler=_plan)

    tune = verbs.add_parser("tune", help="sweep the config's `tune.search_space` with Ray Tune (each trial a "
                            "Ray Train run); resumes a sweep of the same name")
    _config_args(tune)
    tune.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    tune.add_argument("--name", help="sweep directory name under storage.path (overrides tune.name)")
    tune.set_defaults(handler=_tune)

    ev = verbs.add_parser("eval", help="answer held-out questions with the base and tuned models, side by side")
    ev.add_argument("run", metavar="RUN_DIR|CONFIG|arena", help="a run directory written by `rayft train` (base vs "
                    "each completed stage), a config whose eval.models lists adapters / merged models, or `arena` "
                    "followed by a config with eval.arena (many models, one ranking)")
    ev.add_argument("arena_config", nargs="?", metavar="CONFIG", help="with `arena`: the config")
    ev.add_argument("--config", help="with a run directory: config to use (default: the run's own config.yaml)")
    ev.add_argument("--out", help="with a config: output folder (default: <storage.path>/eval-<config>-<time>)")
    ev.add_argument("--benchmarks", metavar="TASKS", help="also run lm-evaluation-harness tasks, comma-separated "
                    "(= --set eval.benchmarks.tasks=[...]; docs/evaluation.md)")
    ev.add_argument("--limit", type=int, metavar="N", help="with --benchmarks: questions per task")
    ev.add_argument("--benchmarks-only", action="store_true", help="skip answering the held-out rows "
                    "(= --set eval.generate=false)")
    _config_args(ev, required=False)
    ev.set_defaults(handler=_eval)

    demo = verbs.add_parser("demo", help="fine-tune the embedded model on the demo task, base vs tuned")
    _config_args(demo, required=False)
    demo.add_argument("--config", dest="config", help="another config to run as the demo")
    demo.set_defaults(handler=_demo)

    config = verbs.add_parser("config", help="config tools")
    config_verbs = config.add_subparsers(dest="config_verb", required=True, metavar="ACTION")
    config_verbs.add_parser("schema", help="print the config's JSON Schema").set_defaults(handler=_config_schema)
    show = config_verbs.add_parser("show", help="validate a config and print it with defaults filled in")
    _config_args(show)
    show.set_defaults(handler=_config_show)

    data = verbs.add_parser("data", help="data tools")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    inspect = data_verbs.add_parser("inspect", help="show each stage's data stats and examples as tokenized")
    _config_args(inspect)
    inspect.add_argument("--examples", type=int, default=2, help="examples to show per stage")
    inspect.set_defaults(handler=_data_inspect)
    gen = data_verbs.add_parser("generate", help="a teacher model (generation.teacher) answers instructions, or "
                                "writes new ones first (self-instruct): training data with provenance; resumable")
    _config_args(gen)
    gen.add_argument("--out", required=True, help="output jsonl (prompt_completion format); never overwritten")
    gen.add_argument("--limit", type=int, help="answer only the first N instructions (self-instruct: write N)")
    gen.add_argument("--restart", action="store_true", help="discard the journal of an earlier, unfinished run")
    gen.set_defaults(handler=_data_generate)
    pref = data_verbs.add_parser("preference", help="build preference pairs: reference answer as chosen and "
                                 "the model's answer as rejected, or (--samples N --score S) the best and the "
                                 "worst of N sampled answers")
    _config_args(pref)
    pref.add_argument("--out", required=True, help="output jsonl (preference format)")
    pref.add_argument("--adapter", help="a tuned adapter folder to answer with (default: the base model)")
    pref.add_argument("--limit", type=int, help="use only the first N rows")
    pref.add_argument("--split", default="train", choices=["train", "eval", "all"],
                      help="which rows of the config's seeded split to answer (default: train, so the "
                      "held-out questions stay unseen by a stage trained on the pairs)")
    pref.add_argument("--samples", type=int, default=1,
                      help="on-policy pairs: sample N answers per prompt and pair the best with the worst (needs --score)")
    pref.add_argument("--score", help="what ranks sampled answers: rouge_l (similarity to the row's reference "
                      "answer), a reward function module:function, or a reward stage's folder")
    pref.add_argument("--temperature", type=float, default=0.8, help="sampling temperature with --samples (default 0.8)")
    pref.add_argument("--min-gap", type=float, default=0.0,
                      help="skip prompts whose best and worst score differ by this much or less (default 0)")
    pref.add_argument("--greedy", action="store_true", help="with --samples: the model's greedy answer is one more "
                      "candidate, so the chosen answer is never worse than what the model answers by default")
    pref.add_argument("--seed", type=int, default=0, help="sampling seed (default 0); another seed, other samples")
    pref.set_defaults(handler=_data_preference)
    listing = data_verbs.add_parser("datasets", help="list the datasets of a dataset registry file")
    listing.add_argument("registry", nargs="?", default="datasets.yaml", help="the registry (default: datasets.yaml)")
    listing.set_defaults(handler=_data_datasets)

    verbs.add_parser("models", help="list the builtin models").set_defaults(handler=_models)

    from rayft.serve.cli import add_merge_arguments, add_serve_arguments

    add_serve_arguments(verbs.add_parser(
        "serve", help="serve models and adapters behind an OpenAI-compatible API (`rayft serve CONFIG`), or "
        "register an adapter in a store (`rayft serve register RUN --id NAME --store DIR`)"))
    add_merge_arguments(verbs.add_parser(
        "merge", help="merge a run's LoRA adapter into its base model (a standard HF model folder)"))

    from rayft.cluster.commands import add_parsers as add_cluster_parsers  # `k8s render|validate`, `submit`

    add_cluster_parsers(verbs, _config_args)
    verbs.choices["serve"].set_defaults(handler=_serve)
    verbs.choices["merge"].set_defaults(handler=_merge)
    verbs.choices["k8s"].set_defaults(handler=_k8s)
    verbs.choices["submit"].set_defaults(handler=_submit)

    from rayft.ui.server import add_arguments as add_ui_arguments

    ui = verbs.add_parser("ui", help="a web page to start runs, watch their curves, read sweeps and chat with "
                          "served models (binds 127.0.0.1)")
    add_ui_arguments(ui)
    ui.set_defaults(handler=_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    started_at = time.time()
    args = build_parser().parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not _has_cuda_hint() else "cuda")
    try:
        return args.handler(args, started_at)
    except UserError as exc:
        print(f"rayft: error: {exc}", file=sys.stderr)
        if args.debug and exc.__cause__ is not None:  # e.g. the hub's or pyarrow's own error
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rayft: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rayft config schema | head`
        sys.stderr.close()
        return 0


# One handler per verb: (parsed arguments, when the command started) -> exit code. Each imports what
# it calls, so `rayft --help` and the light verbs start without torch or Ray.

def _config_schema(args: argparse.Namespace, started_at: float) -> int:
    from rayft.config.load import json_schema

    print(json_schema())
    return 0


def _config_show(args: argparse.Namespace, started_at: float) -> int:
    from rayft.config.load import dump_yaml, load_pipeline

    print(dump_yaml(load_pipeline(args.config, args.overrides).pipeline), end="")
    return 0


def _data_preference(args: argparse.Namespace, started_at: float) -> int:
    from rayft.config.load import load_pipeline
    from rayft.datatools.pair_builder import build_preference_pairs

    build_preference_pairs(load_pipeline(args.config, args.overrides), args.out, args.adapter, args.limit, args.split,
                           samples=args.samples, score=args.score, temperature=args.temperature, min_gap=args.min_gap,
                           greedy=args.greedy, seed=args.seed)
    return 0


def _data_generate(args: argparse.Namespace, started_at: float) -> int:
    from rayft.config.load import load_pipeline
    from rayft.datatools.teacher_data import generate_data

    generate_data(load_pipeline(args.config, args.overrides), args.out, limit=args.limit, restart=args.restart)
    return 0


def _data_datasets(args: argparse.Namespace, started_at: float) -> int:
    from rayft.data.registry import describe_registry

    print(describe_registry(Path(args.registry).resolve()))
    return 0


def _data_inspect(args: argparse.Namespace, started_at: float) -> int:
    from rayft.config.load import load_pipeline
    from rayft.datatools.inspect import inspect_data

    inspect_data(load_pipeline(args.config, args.overrides), examples=args.examples)
    return 0


def _serve(args: argparse.Namespace, started_at: float) -> int:
    from rayft.serve.cli import serve_main

    return serve_main(args)


def _merge(args: argparse.Namespace, started_at: float) -> int:
    from rayft.serve.cli import merge_main

    return merge_main(args)


def _models(args: argparse.Namespace, started_at: float) -> int:
    from rayft.models.builtin import BUILTINS

    for name, spec in BUILTINS.items():
        print(f"builtin:{name:24s} {spec.description}")
    return 0


def _train(args: argparse.Namespace, started_at: float) -> int:
    from rayft.config.load import load_pipeline
    from rayft.train.run_and_evaluate import train_and_evaluate

    loaded = load_pipeline(args.config, args.overrides)
    outcome = train_and_evaluate(loaded, address=args.address, run_name=args.run_name, started_at=started_at,
                                 force=args.force)
    result = outcome.run
    for stage in result.stages:
        print(f"rayft: stage {stage['stage']}: {stage['status']}  step {stage.get('global_step')}  "
              f"train_loss {_fmt(stage.get('train_loss'))}  eval_loss {_fmt(stage.get('eval_loss'))}")
    if outcome.report:
        print(f"rayft: report: {outcome.report}")
    print(f"rayft: done. run directory: {result.run_dir}")
    return 0


def _plan(args: argparse.Namespace, started_at: float) -> int:
    from rayft.config.load import load_pipeline
    from rayft.train.memory_plan import plan_run

    plans = plan_run(load_pipeline(args.config, args.overrides), address=args.address)
    return 0 if all(plan.fits for plan in plans) else 1


def _tune(args: argparse.Namespace, started_at: float) -> int:
    from rayft.tune.sweep import run_sweep

    run_sweep(args.config, args.overrides, address=args.address, name=args.name, started_at=started_at)
    return 0


def _eval(args: argparse.Namespace, started_at: float) -> int:
    from rayft.config.load import load_pipeline
    from rayft.eval.evaluate import evaluate_config, evaluate_run

    target = Path(args.run)
    if args.run == "arena" and not target.exists():
        from rayft.eval.arena import run_arena

        if not args.arena_config:
            raise UserError("rayft eval arena CONFIG: name the config whose eval.arena lists the models and judge")
        report = run_arena(load_pipeline(args.arena_config, args.overrides), args.out)
        print(f"rayft: report written to {report}")
        return 0
    if args.arena_config:
        raise UserError(f"rayft eval: unexpected argument {args.arena_config!r} (only `rayft eval arena CONFIG` "
                        f"takes two)")
    if args.benchmarks:
        tasks = [t.strip() for t in args.benchmarks.split(",") if t.strip()]
        args.overrides = [*args.overrides, f"eval.benchmarks.tasks={json.dumps(tasks)}"]
    if args.limit is not None:
        args.overrides = [*args.overrides, f"eval.benchmarks.limit={args.limit}"]
    if args.benchmarks_only:
        args.overrides = [*args.overrides, "eval.generate=false"]
    if target.is_file():  # a config: base vs eval.models
        report = evaluate_config(load_pipeline(target, args.overrides), args.out)
    else:
        config = args.config or str(target / "config.yaml")
        report = evaluate_run(load_pipeline(config, args.overrides), target)
    print(f"rayft: report written to {report}")
    return 0


def _k8s(args: argparse.Namespace, started_at: float) -> int:
    from rayft.cluster.commands import run_k8s

    return run_k8s(args)


def _submit(args: argparse.Namespace, started_at: float) -> int:
    from rayft.cluster.commands import run_submit

    return run_submit(args)


def _ui(args: argparse.Namespace, started_at: float) -> int:
    from rayft.ui.server import ui_main

    return ui_main(args)


def _demo(args: argparse.Namespace, started_at: float) -> int:
    from rayft.demo.run import run_demo

    run_demo(args.overrides, started_at=started_at, config_path=args.config)
    return 0


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _version() -> str:
    from rayft import __version__

    return __version__


def _has_cuda_hint() -> bool:
    return bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or os.path.exists("/dev/nvidia0")


if __name__ == "__main__":
    raise SystemExit(main())
