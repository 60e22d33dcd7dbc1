"""Build the Serve application from a config, and run it (`rayft serve`).

`build_app(args)` is the Serve app builder: a Serve config file names it as
`import_path: rayft.serve.app:build_app` with `args` holding rayft config sections (`model`, `serve`),
so `serve run serve/demo.yaml` and `rayft serve serve/demo.yaml` start the same app. `rayft serve`
also accepts a plain rayft config with a `serve:` section.
"""

from __future__ import annotations

import importlib
import signal
import time
from pathlib import Path
from typing import Any

from rayft.config.pipeline import Pipeline
from rayft.core.errors import ConfigError
from rayft.core.paths import absolute_path
from rayft.schema.serve import default_model_name

BUILDER = "rayft.serve.app:build_app"


def build_app(args: dict[str, Any] | None = None):
    """Serve app builder: `args` are rayft config sections (`model`, `serve`), validated as a config."""
    from rayft.config.load import load_pipeline

    pipeline = load_pipeline(raw=dict(args or {}), label="serve app args").pipeline
    if pipeline.serve.engine == "vllm":
        from rayft.serve.vllm_app import build_vllm_application

        return build_vllm_application(pipeline)
    return build_application(pipeline)


def build_application(pipeline: Pipeline):
    """The app: an OpenAI ingress in front of one deployment for the base model (with the adapter
    store multiplexed onto it) and one per merged model."""
    from rayft.models.loader import resolve_model
    from rayft.serve.deployments import ModelServer
    from rayft.serve.ingress import OpenAIIngress
    from rayft.serve.store import open_store

    cfg = pipeline.serve.model_copy(deep=True)
    cfg.adapter_store = absolute_path(cfg.adapter_store)
    open_store(cfg.adapter_store)  # an unsupported URI fails here, before anything starts
    base_name = cfg.model_name or default_model_name(pipeline.model.name)
    base_path = resolve_model(pipeline.model.name, pipeline.model.revision)
    model_cfg = pipeline.model
    options = cfg.replicas.deployment_options()
    base = ModelServer.options(name=f"model-{base_name}", **options).bind(
        base_path, model_cfg, cfg, cfg.adapter_store)
    merged, handles = [], []
    for entry in cfg.merged_models:
        path = resolve_model(absolute_path(entry.path))
        merged.append((entry.name, path))
        handles.append(ModelServer.options(name=f"merged-{entry.name}", **options).bind(
            path, model_cfg.model_copy(update={"name": path}), cfg, None))
    return OpenAIIngress.options(
        name="openai", num_replicas=cfg.replicas.ingress_replicas,
        max_ongoing_requests=cfg.replicas.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.replicas.ingress_num_cpus},
    ).bind(base_name, base_path, base, merged, handles, cfg)


# ---- `rayft serve CONFIG` -------------------------------------------------------------------------
def apps_from_file(path: str, overrides: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """[{name, route_prefix, import_path, args}] and http options, from a Serve config file
    (`applications:`) or a rayft config (its `serve:` section)."""
    from rayft.config.load import load_pipeline, read_yaml

    raw = read_yaml(Path(path))
    if "applications" not in raw:
        pipeline = load_pipeline(path, overrides).pipeline
        http = pipeline.serve.http
        return ([{"name": pipeline.serve.app_name, "route_prefix": http.route_prefix, "import_path": BUILDER,
                  "args": pipeline.model_dump(mode="json")}], {"host": http.host, "port": http.port})
    apps = raw.get("applications")
    if not isinstance(apps, list) or not apps or not all(isinstance(a, dict) for a in apps):
        raise ConfigError(f"{path}: applications: expected a list of applications")
    for i, app in enumerate(apps):
        if "import_path" not in app:
            raise ConfigError(f"{path}: applications.{i}.import_path: required")
        if app.get("deployments"):
            raise ConfigError(f"{path}: applications.{i}.deployments: `rayft serve` takes replicas and resources "
                              "from args.serve.replicas; use `serve run` for per-deployment overrides")
        if app["import_path"] == BUILDER:
            # errors name the dotted field, exit 2
            app["args"] = load_pipeline(path, overrides, raw=dict(app.get("args") or {}),
                                        label=f"{path}: applications.{i}.args").raw
    http = raw.get("http_options") or {}
    return apps, {"host": http.get("host", "127.0.0.1"), "port": int(http.get("port", 8000))}


def _import(import_path: str):
    module, _, attr = import_path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"import_path {import_path!r}: {exc}") from None


def run_from_config(path: str, overrides: list[str] | None = None, address: str | None = None,
                    host: str | None = None, port: int | None = None, block: bool = True) -> str:
    """Start Ray (or join `address`), Serve's proxy and the config's apps; block until Ctrl-C.
    Returns the base URL."""
    import ray
    from ray import serve

    apps, http = apps_from_file(path, list(overrides or []))
    http = {"host": host or http["host"], "port": port or http["port"]}
    if not ray.is_initialized():
        ray.init(address=address, logging_level="WARNING")
    serve.start(http_options=http)
    url = f"http://{http['host']}:{http['port']}"
    for app in apps:
        builder = _import(app["import_path"])
        target = builder(app.get("args") or {})
        prefix = app.get("route_prefix", "/")
        serve.run(target, name=app.get("name", "default"), route_prefix=prefix)
        print(f"rayft serve: app '{app.get('name', 'default')}' at {url}{prefix.rstrip('/')}/v1", flush=True)
    if not block:
        return url
    print("rayft serve: ready; Ctrl-C (or SIGTERM) to stop", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # a container stop or `kill` shuts Serve down cleanly too
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return url


def _interrupt(signum, frame):
    raise KeyboardInterrupt

