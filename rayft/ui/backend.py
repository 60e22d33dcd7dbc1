"""What the web UI does, without the page: start and stop runs as Ray jobs, start a Serve app,
register adapters, list models and stream chat answers through the app's OpenAI API.

Everything goes through the library the CLI uses: runs are `python -m rayft train CONFIG --run-name
NAME` Ray jobs (rayft.cluster.submit.JobClient, as `rayft submit`), Serve is
rayft.serve.app.run_from_config (as `rayft serve`), adapters are registered with the adapter store
(as `rayft serve register`), and runs are read with rayft.records.listing.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rayft.config.load import dump_yaml
from rayft.core.errors import UserError
from rayft.records.listing import RunState, list_runs, run_state
from rayft.ui.config_form import check_config, check_run_name, demo_dataset, to_yaml

log = logging.getLogger("rayft.ui")
UI_DIR = ".ui"  # under the storage path: the configs the page wrote (one per run) and uploads
JOB_PREFIX = "rayft-ui-"
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


@dataclass
class Backend:
    storage: Path
    data_dirs: list[Path]
    address: str | None = None  # a Ray cluster to join; None starts a local one
    serve_url: str = "http://127.0.0.1:8000"
    serve_model: str = "builtin:smollm2-135m-instruct"
    api_key: str | None = None  # for a Serve app started elsewhere with keys
    _jobs: object = field(default=None, repr=False)
    _serve_started: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.storage = self.storage.expanduser().resolve()
        self.storage.mkdir(parents=True, exist_ok=True)
        (self.storage / UI_DIR / "configs").mkdir(parents=True, exist_ok=True)
        (self.storage / UI_DIR / "uploads").mkdir(parents=True, exist_ok=True)
        self.data_dirs = [d.expanduser().resolve() for d in self.data_dirs]

    # ---- paths --------------------------------------------------------------------------------
    @property
    def uploads(self) -> Path:
        return self.storage / UI_DIR / "uploads"

    @property
    def adapter_store(self) -> Path:
        return self.storage / "adapters"

    @property
    def allowed_data(self) -> list[Path]:
        return [*self.data_dirs, self.uploads, demo_dataset()]

    def data_files(self) -> list[str]:
        """Data files the page may offer: under the data folders and the uploads."""
        found = []
        for root in [*self.data_dirs, self.uploads]:
            if root.is_dir():
                found += [str(p) for p in sorted(root.rglob("*")) if p.suffix in (".jsonl", ".json", ".csv",
                                                                                   ".parquet") and p.is_file()]
        return found

    def save_upload(self, temp_path: str, original_name: str) -> Path:
        """Copy an uploaded file into the uploads folder (never over an existing file)."""
        source = Path(temp_path)
        if source.stat().st_size > MAX_UPLOAD_BYTES:
            raise UserError(f"upload: {original_name} is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
        name = Path(original_name).name or "data.jsonl"
        if Path(name).suffix not in (".jsonl", ".json", ".csv", ".parquet"):
            raise UserError(f"upload: {name}: expected a .jsonl, .json, .csv or .parquet file")
        target = self.uploads / name
        stem, n = target.stem, 1
        while target.exists():
            target, n = self.uploads / f"{stem}-{n}{target.suffix}", n + 1
        shutil.copyfile(source, target)
        return target

    # ---- Ray and jobs ---------------------------------------------------------------------------
    def connect(self) -> None:
        """Join `address` or start a local Ray with its dashboard (the Jobs API lives there)."""
        import ray

        from rayft.cluster.submit import JobClient, find_token

        if not ray.is_initialized():
            # Ray's own default without an address: a cluster started with `ray start` on this machine
            # (or $RAY_ADDRESS), else a new local one with its dashboard.
            context = ray.init(address=self.address, include_dashboard=True, dashboard_host="127.0.0.1",
                               logging_level="WARNING", configure_logging=False)
        else:
            context = ray.get_runtime_context()
        url = getattr(context, "dashboard_url", None) or ray.worker.get_dashboard_url()
        if not url:
            raise UserError("ray: the cluster has no dashboard, so no Jobs API to start runs with")
        self._jobs = JobClient(url if url.startswith("http") else f"http://{url}", find_token())

    def close(self) -> None:
        """Stop the Serve app this page started and leave (or stop, if local) the Ray cluster."""
        import ray

        if self._serve_started:
            from ray import serve

            serve.shutdown()
        if ray.is_initialized():
            ray.shutdown()

    @property
    def jobs(self):
        if self._jobs is None:
            self.connect()
        return self._jobs

    def memory_text(self, loaded: Any) -> str:
        """One line per stage: the peak memory a worker will need against what it can have
        (rayft.compute.plan, rows up to data.max_length), as `rayft plan` and `rayft train` check it."""
        from rayft.compute.plan import gib
        from rayft.train.memory_plan import estimates_without_data

        plans = estimates_without_data(loaded.pipeline)
        if plans is None:
            return "memory: estimated once the model is on this machine (after its first run)"
        lines = []
        for plan in plans:
            line = (f"memory, stage {plan.stage}: about {gib(plan.total)} per {plan.device.upper()} worker "
                    f"of {gib(plan.limit)}")
            if not plan.fits:
                line += " -- **does not fit**; try " + "; or ".join(text for text, _ in plan.knobs[:3])
            lines.append(line)
        return "\n\n".join(lines)

    def start_run(self, yaml_text: str, run_name: str) -> tuple[str, Path]:
        """Validate, write the config under .ui/configs and submit it as a Ray job. Returns (job id,
        run directory)."""
        problem = check_run_name(run_name)
        if problem:
            raise UserError(problem)
        run_dir = self.storage / run_name
        if run_dir.exists():
            raise UserError(f"run name: {run_name} exists already under {self.storage}; pick another name")
        loaded, problem = check_config(yaml_text, self.allowed_data, self.storage)
        if problem:
            raise UserError(problem)
        config = self.storage / UI_DIR / "configs" / f"{run_name}.yaml"
        config.write_text(dump_yaml(loaded.pipeline))
        entrypoint = shlex.join([sys.executable, "-m", "rayft", "train", str(config), "--run-name", run_name])
        job_id = self.jobs.submit(entrypoint, None, f"{JOB_PREFIX}{run_name}-{int(time.time())}",
                                  metadata={"rayft_run": str(run_dir)})
        return job_id, run_dir

    def job_statuses(self) -> dict[str, tuple[str, str]]:
        """{run name: (job id, job status)} for the runs this page started (newest job per run)."""
        found: dict[str, tuple[str, str, float]] = {}
        if self._jobs is None:
            return {}
        try:
            jobs = self.jobs.list_jobs()
        except UserError as exc:
            log.warning("rayft ui: cannot list Ray jobs: %s", exc)
            return {}
        for job in jobs:
            run = (job.metadata or {}).get("rayft_run")
            if run and job.submission_id:
                name = Path(run).name
                started = job.start_time or 0
                if name not in found or started > found[name][2]:
                    found[name] = (job.submission_id, str(job.status.value if hasattr(job.status, "value")
                                                          else job.status), started)
        return {name: (job_id, status) for name, (job_id, status, _) in found.items()}

    def stop_run(self, run_name: str) -> str:
        job = self.job_statuses().get(run_name)
        if not job:
            raise UserError(f"{run_name}: not a run started from this page (stop it where it was started)")
        job_id, status = job
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return f"{run_name}: already {status.lower()}"
        self.jobs.stop(job_id)
        return f"{run_name}: stop requested (job {job_id})"

    def job_logs(self, run_name: str, lines: int = 40) -> str:
        job = self.job_statuses().get(run_name)
        if not job:
            return ""
        return "\n".join(self.jobs.logs(job[0]).splitlines()[-lines:])

    def runs(self) -> list[RunState]:
        """Runs under the storage path, a run's status overlaid with its job's when the job ended
        without the run saying so (stopped, or its driver killed)."""
        jobs = self.job_statuses()
        runs = [_with_job(run, jobs) for run in list_runs(self.storage)]
        known = {r.name for r in runs}
        for name, (_, status) in jobs.items():  # submitted, not yet written its run directory
            if name not in known and status in ("PENDING", "RUNNING"):
                runs.insert(0, RunState(name, self.storage / name, "starting"))
        return runs

    def run(self, name: str) -> RunState:
        path = (self.storage / name).resolve()
        if path.parent != self.storage or not (path / "config.yaml").is_file():
            raise UserError(f"{name}: no such run under {self.storage}")
        return _with_job(run_state(path), self.job_statuses())

    def sweep(self, name: str):
        from rayft.records.listing import is_sweep, sweep_state

        path = (self.storage / name).resolve()
        if path.parent != self.storage or not is_sweep(path):
            raise UserError(f"{name}: no such sweep under {self.storage}")
        return sweep_state(path)

    # ---- Serve ----------------------------------------------------------------------------------
    def serve_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.serve_url}/healthz", timeout=2) as answer:
                return answer.status == 200
        except Exception:
            return False

    def start_serve(self) -> str:
        """Start rayft's Serve app on this cluster: the base model plus every adapter of the page's
        store (registered later ones are served on their next request)."""
        from urllib.parse import urlparse

        from rayft.serve.app import run_from_config

        if self.serve_up():
            return f"Serve is already up at {self.serve_url}"
        url = urlparse(self.serve_url)
        self.adapter_store.mkdir(parents=True, exist_ok=True)
        config = self.storage / UI_DIR / "serve.yaml"
        config.write_text(to_yaml({
            "model": {"name": self.serve_model},
            "serve": {"adapter_store": str(self.adapter_store), "http": {"host": url.hostname, "port": url.port},
                      "replicas": {"num_cpus": 0.5, "ingress_num_cpus": 0.1}},
        }))
        self.jobs  # joins (or starts) the cluster first
        run_from_config(str(config), block=False)
        self._serve_started = True
        return f"Serve is up at {self.serve_url} (base {self.serve_model}, adapters from {self.adapter_store})"

    def register(self, run_name: str, adapter_id: str) -> str:
        from rayft.serve.store import find_adapter, open_store

        run = self.run(run_name)
        ref = open_store(str(self.adapter_store)).register(find_adapter(run.path), adapter_id)
        return f"registered '{ref.id}' (version {ref.version}) from {run.name}"

    def _client(self):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.serve_url}/v1", api_key=self.api_key or "none", max_retries=0, timeout=120)

    def models(self) -> list[str]:
        if not self.serve_up():
            return []
        return [m.id for m in self._client().models.list().data]

    def chat(self, model: str, messages: list[dict[str, str]], max_tokens: int = 64) -> Iterator[str]:
        """The answer so far, after each streamed chunk."""
        text = ""
        stream = self._client().chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                        temperature=0, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                yield text
        if not text.strip():  # a person sees an empty bubble otherwise
            yield f"(the model answered only whitespace: {len(text)} characters)"


def _with_job(run: RunState, jobs: dict[str, tuple[str, str]]) -> RunState:
    """The run's status, corrected by its Ray job's when the job ended without the run saying so
    (stopped from the page, or its driver killed)."""
    status = jobs.get(run.name, (None, None))[1]
    if status in ("STOPPED", "FAILED") and run.status in ("running", "stale", "pending"):
        run.status = "stopped" if status == "STOPPED" else "failed"
    return run
