"""`rayft serve ...` and `rayft merge ...` arguments and actions (kept here so rayft/cli.py stays
one subparser and one handler per verb)."""

from __future__ import annotations

import argparse

from rayft.core.errors import UserError


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("`rayft serve CONFIG`: serve a base model, its adapters and merged models behind an "
                     "OpenAI-compatible API. `rayft serve register SOURCE --id NAME --store DIR`: copy a finished "
                     "run's adapter into an adapter store; a running app serves it on its next request.")
    p.add_argument("config", metavar="CONFIG|register",
                   help="a Serve config file (serve/*.yaml) or a rayft config with a `serve:` section; or `register`")
    p.add_argument("source", nargs="?", help="register: a rayft run directory, a stage folder or an adapter folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the app's config, e.g. --set serve.replicas.num_replicas=2")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--host", help="HTTP host (default: from the config)")
    p.add_argument("--port", type=int, help="HTTP port (default: from the config)")
    p.add_argument("--id", dest="adapter_id", help="register: the id clients put in `model`")
    p.add_argument("--store", help="register: the adapter store (the app's serve.adapter_store)")
    p.add_argument("--stage", help="register: which stage of a run (default: its last stage with an adapter)")


def serve_main(args: argparse.Namespace) -> int:
    if args.config == "register":
        from rayft.serve.store import VERSIONS, LocalAdapterStore, find_adapter, open_store

        missing = [flag for flag, value in (("SOURCE", args.source), ("--id", args.adapter_id),
                                            ("--store", args.store)) if not value]
        if missing:
            raise UserError(f"rayft serve register: missing {', '.join(missing)} "
                            "(usage: rayft serve register SOURCE --id NAME --store DIR)")
        store = open_store(args.store)
        ref = store.register(find_adapter(args.source, args.stage), args.adapter_id)
        where = ref.path if isinstance(store, LocalAdapterStore) else f"{store.uri}/{VERSIONS}/{ref.key}"
        print(f"rayft serve: registered '{ref.id}' (version {ref.version}) from {args.source} -> {where}")
        return 0
    if args.source is not None:
        raise UserError(f"rayft serve: unexpected argument {args.source!r} (usage: rayft serve CONFIG)")
    from rayft.serve.app import run_from_config

    run_from_config(args.config, args.overrides, address=args.address, host=args.host, port=args.port)
    return 0


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a rayft run directory, a stage folder, or an adapter folder")
    p.add_argument("--out", required=True, help="folder to write the merged Hugging Face model to")
    p.add_argument("--base", help="base model (default: the run's model.name)")
    p.add_argument("--stage", help="which stage of a run (default: its last stage with an adapter)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def merge_main(args: argparse.Namespace) -> int:
    from rayft.serve.merge import merge_adapter

    out = merge_adapter(args.source, args.out, base=args.base, stage=args.stage, force=args.force)
    print(f"rayft merge: wrote {out}")
    return 0
