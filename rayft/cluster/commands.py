"""The `rayft k8s render|validate` and `rayft submit` verbs: their arguments and what they call.
Kept here so rayft/cli.py only adds the two subparsers and a handler each."""

from __future__ import annotations

import argparse
import sys


def add_parsers(verbs, config_args) -> None:
    k8s = verbs.add_parser("k8s", help="KubeRay manifests: render from a config, validate against the CRDs")
    k8s_verbs = k8s.add_subparsers(dest="k8s_verb", required=True, metavar="ACTION")
    render = k8s_verbs.add_parser("render", help="write RayCluster / RayJob / RayService YAML from a config")
    config_args(render)
    render.add_argument("--out", required=True, help="output folder")
    validate = k8s_verbs.add_parser("validate", help="validate manifests against KubeRay CRDs (unknown fields "
                                    "are errors)")
    validate.add_argument("files", nargs="+", metavar="FILE", help="manifest YAML files (multi-document)")
    validate.add_argument("--crd", action="append", required=True, metavar="CRD.yaml",
                          help="a CRD file (KubeRay Helm chart crds/, or `kubectl get crd rayjobs.ray.io -o yaml`); "
                          "repeatable")

    submit = verbs.add_parser("submit", help="run a config as a Ray job on a cluster (Ray Jobs API, token auth)")
    submit.add_argument("config", nargs="?", help="the run's YAML file (inside the working directory)")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (passed on to `rayft train` in the job)")
    submit.add_argument("--address", default=None,
                        help="the head's dashboard URL, e.g. http://127.0.0.1:8265 (default: RAY_ADDRESS)")
    submit.add_argument("--token-file", help="file holding the Ray auth token (default: RAY_AUTH_TOKEN, "
                        "RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")
    submit.add_argument("--working-dir", default=".", help="folder uploaded as the job's working dir (default: .)")
    submit.add_argument("--python", default="python", help="python on the cluster that has rayft's dependencies")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return")
    action = submit.add_mutually_exclusive_group()
    action.add_argument("--status", metavar="ID", help="print a job's status (exit 0 SUCCEEDED, 1 FAILED/STOPPED)")
    action.add_argument("--logs", metavar="ID", help="print a job's logs")
    action.add_argument("--stop", metavar="ID", help="stop a running job")


def run_k8s(args: argparse.Namespace) -> int:
    if args.k8s_verb == "render":
        from rayft.config import load as config_io
        from rayft.cluster.render import render_all, write_all

        loaded = config_io.load_pipeline(args.config, args.overrides)
        for path in write_all(render_all(loaded), args.out, args.config):
            print(f"rayft: wrote {path}")
        return 0
    from rayft.cluster.crd_schema import ManifestError, load_crds, validate_file

    crds = load_crds(args.crd)
    failed = checked = 0
    for path in args.files:
        for result in validate_file(path, crds):
            if not result.checked:
                print(f"skipped {result.label}: no CRD given for its apiVersion/kind")
                continue
            checked += 1
            if result.errors:
                failed += 1
                print(f"INVALID {result.label}:", file=sys.stderr)
                for error in result.errors:
                    print(f"  {error}", file=sys.stderr)
            else:
                print(f"ok      {result.label}")
    if failed:
        raise ManifestError(f"{failed} of {checked} manifest(s) do not match the CRD schema (see above)")
    if not checked:
        raise ManifestError(f"no manifest matched a CRD given with --crd (CRDs: "
                            f"{', '.join(f'{v}/{k}' for v, k in crds.schemas)})")
    return 0


def run_submit(args: argparse.Namespace) -> int:
    import os

    from rayft.cluster.submit import JobClient, SubmitError, find_token, prepare_entrypoint, submit_and_follow

    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SubmitError("--address: give the head's dashboard URL, e.g. http://127.0.0.1:8265 (or set RAY_ADDRESS)")
    if not (args.config or args.status or args.logs or args.stop):
        raise SubmitError("give a CONFIG to submit, or one of --status / --logs / --stop ID")
    if args.config and (args.status or args.logs or args.stop):
        raise SubmitError("give either a CONFIG to submit or --status / --logs / --stop ID, not both")
    entrypoint = prepare_entrypoint(args.config, args.overrides, args.working_dir, args.python) if args.config else None
    client = JobClient(address, find_token(args.token_file))
    if args.status:
        status = client.status(args.status)
        print(status)
        return 1 if status in ("FAILED", "STOPPED") else 0
    if args.logs:
        print(client.logs(args.logs), end="")
        return 0
    if args.stop:
        stopped = client.stop(args.stop)
        print(f"rayft: {'stop requested for' if stopped else 'already finished:'} {args.stop}")
        return 0
    return submit_and_follow(client, args.config, entrypoint, args.working_dir, wait=not args.no_wait)

