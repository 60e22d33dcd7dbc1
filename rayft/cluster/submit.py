"""`rayft submit`: run a config as a Ray job on a cluster, through Ray's `JobSubmissionClient`.

The job uploads the working directory (the project, minus `.rayignore` / EXCLUDES) and runs
`python -m rayft train CONFIG [--set ...]` on the cluster; the client follows its logs and the
job's final status becomes the exit code (0 SUCCEEDED, 1 FAILED or STOPPED).

Auth (Ray token auth, RAY_AUTH_MODE=token on the cluster): the token is read from `--token-file`,
else RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's own
order), and sent as `Authorization: Bearer <token>` on every request, log streaming included.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rayft.core.errors import UserError

# Never uploaded, even without a .rayignore in the working directory (Ray also honours
# .gitignore and .rayignore there). Patterns are gitignore-style, relative to the working dir.
EXCLUDES = [".git", ".venv", "venv", "**/__pycache__", "*.pyc", ".pytest_cache", "*.egg-info",
            "runs", "bench/results", ".gpu", "build", "dist", "*.safetensors", "*.gguf", "*.bin", "*.pt"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
TAIL_LINES = 40


class SubmitError(UserError):
    """The cluster refused or cannot be reached, or the job id is unknown."""


def find_token(token_file: str | None = None) -> str | None:
    """The Ray auth token, in Ray's own order of precedence (after an explicit --token-file)."""
    if token_file:
        return _read_token(Path(token_file), "--token-file")
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return _read_token(Path(os.environ["RAY_AUTH_TOKEN_PATH"]), "RAY_AUTH_TOKEN_PATH")
    default = Path.home() / ".ray" / "auth_token"
    return _read_token(default, "~/.ray/auth_token") if default.is_file() else None


def _read_token(path: Path, what: str) -> str:
    try:
        token = path.expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SubmitError(f"{what}: cannot read the token file {path} ({exc.strerror})") from None
    if not token:
        raise SubmitError(f"{what}: the token file {path} is empty")
    return token


@dataclass
class JobClient:
    """A JobSubmissionClient with readable errors."""

    address: str
    token: str | None

    def __post_init__(self) -> None:
        from ray.job_submission import JobSubmissionClient

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.client = self._call(JobSubmissionClient, self.address, headers=headers)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError:
            raise
        except Exception as exc:  # requests / Ray raise several types; all mean "cannot talk to the head"
            raise SubmitError(self._explain(exc)) from None

    def _explain(self, exc: Exception) -> str:
        text = str(exc).strip()
        if "401" in text or "Authentication required" in text:
            return (f"{self.address}: the cluster requires a Ray auth token and none was sent; pass --token-file, "
                    "set RAY_AUTH_TOKEN, or write it to ~/.ray/auth_token")
        if "403" in text or "Invalid authentication token" in text:
            return f"{self.address}: the cluster refused the Ray auth token (403 Forbidden); check the token"
        if "No available agent" in text:
            return (f"{self.address}: the cluster has no job agent running. On one machine a second local Ray "
                    "cannot start its agent while another Ray holds the agent's port (52365): start one cluster "
                    "with `ray start --head` and point every command at it (`--address auto`)")
        if "does not exist" in text or "404" in text:
            return f"{self.address}: {text.splitlines()[0]}"
        first = text.splitlines()[0] if text else type(exc).__name__
        return f"{self.address}: cannot reach the Ray Jobs API ({first}); is the dashboard port (8265) forwarded?"

    def submit(self, entrypoint: str, working_dir: Path | None, submission_id: str,
               metadata: dict[str, str] | None = None) -> str:
        """Without a working dir the job runs where the cluster's nodes see the same files (a local
        cluster, or shared storage)."""
        runtime_env = {"working_dir": str(working_dir), "excludes": EXCLUDES} if working_dir else None
        return self._call(self.client.submit_job, entrypoint=entrypoint, runtime_env=runtime_env,
                          submission_id=submission_id, metadata=metadata)

    def list_jobs(self) -> list:
        return self._call(self.client.list_jobs)

    def status(self, job_id: str) -> str:
        return str(self._call(self.client.get_job_status, job_id).value)

    def info(self, job_id: str):
        return self._call(self.client.get_job_info, job_id)

    def logs(self, job_id: str) -> str:
        return self._call(self.client.get_job_logs, job_id)

    def stop(self, job_id: str) -> bool:
        return self._call(self.client.stop_job, job_id)

    def follow(self, job_id: str, out=sys.stdout) -> None:
        """Print the job's logs as they come, until the job ends."""
        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                out.write(chunk)
                out.flush()

        self._call(asyncio.run, tail())

    def wait(self, job_id: str, timeout_s: float = 60) -> str:
        """The terminal status (the log stream can close a moment before the status is final)."""
        deadline = time.monotonic() + timeout_s
        status = self.status(job_id)
        while status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.5)
            status = self.status(job_id)
        return status


def train_entrypoint(config: Path, working_dir: Path, overrides: list[str], python: str = "python") -> str:
    """`python -m rayft train <config relative to the working dir> [--set k=v ...]`, shell-quoted."""
    if not working_dir.is_dir():
        raise SubmitError(f"--working-dir {working_dir}: not a directory")
    try:
        relative = config.resolve().relative_to(working_dir.resolve())
    except ValueError:
        raise SubmitError(f"{config}: the config must be inside the uploaded working directory {working_dir} "
                          "(run from the project root, or pass --working-dir)") from None
    command = [python, "-m", "rayft", "train", relative.as_posix()]
    for override in overrides:
        command += ["--set", override]
    return shlex.join(command)


def prepare_entrypoint(config: str, overrides: list[str], working_dir: str = ".", python: str = "python") -> str:
    """Check the config here (a bad field fails now, named, not minutes later on the cluster) and
    build the job's entrypoint."""
    from rayft.config import load as config_io

    config_io.load_pipeline(config, overrides)
    return train_entrypoint(Path(config), Path(working_dir), overrides, python)


def submit_and_follow(client: JobClient, config: str, entrypoint: str, working_dir: str = ".",
                      wait: bool = True, out=sys.stdout) -> int:
    """Submit, follow the logs, and return 0 (SUCCEEDED) or 1 (FAILED / STOPPED)."""
    config_path, wd = Path(config), Path(working_dir)
    job_id = client.submit(entrypoint, wd, f"rayft-{config_path.stem.replace('_', '-')}-{uuid.uuid4().hex[:8]}")
    print(f"rayft: submitted {job_id} to {client.address}: {entrypoint}", file=out, flush=True)
    if not wait:
        return 0
    client.follow(job_id, out)
    status = client.wait(job_id)
    return report_final(client, job_id, status, out)


def report_final(client: JobClient, job_id: str, status: str, out=sys.stdout) -> int:
    print(f"rayft: job {job_id} {status}", file=out, flush=True)
    if status == "SUCCEEDED":
        return 0
    info = client.info(job_id)
    tail = client.logs(job_id).rstrip("\n").splitlines()[-TAIL_LINES:]
    message = (info.message or "the job did not succeed").strip().splitlines()[0]  # Ray appends the logs
    print(f"rayft: {message}", file=sys.stderr)
    print(f"rayft: last {len(tail)} log lines of {job_id}:", file=sys.stderr)
    for line in tail:
        print(f"  | {line}", file=sys.stderr)
    return 1
