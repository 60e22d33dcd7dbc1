"""Job submission against a real local Ray head with token auth on (one head for the module):
plain `ray job submit --working-dir .` and `rayft submit` both run jobs/configs/sft_tiny.yaml to
SUCCEEDED; a failing job exits non-zero with its log tail; a request without the token is refused.

The head is `ray start --head` on 127.0.0.1 with every port picked free and its own temp dir, and
is torn down by its process group only (other Ray clusters may share the machine).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ray_head import BIN, LocalRayHead

REPO = Path(__file__).resolve().parents[1]
CONFIG = "jobs/configs/sft_tiny.yaml"
QUICK = ["--set", "training.max_steps=2", "--set", "data.eval_split=8", "--set", "data.max_rows=32",
         "--set", "scaling.num_workers=1"]  # submission mechanics only: keep the jobs short

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def head():
    server = LocalRayHead.start(num_cpus=2)
    try:
        yield server
    finally:
        server.stop()


def client_env(head: LocalRayHead | None = None, home: Path | None = None, **extra) -> dict:
    """The environment of a client process: this checkout's rayft, and the head's token unless not given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    if head is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token)
    if home is not None:
        env["HOME"] = str(home)  # no ~/.ray/auth_token to fall back on
    env.update(extra)
    return env


def run(args: list[str], env: dict, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def rayft(*args: str) -> list[str]:
    return [sys.executable, "-m", "rayft", *args]


def completed_summary(storage: Path) -> dict:
    summary = json.loads((storage / "sft-tiny" / "sft" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 2, summary
    return summary


def test_plain_ray_job_submit_with_working_dir(head, tmp_path):
    result = run([str(BIN / "ray"), "job", "submit", "--address", head.address, "--working-dir", ".", "--",
                  "python", "-m", "rayft", "train", CONFIG, "--set", f"storage.path={tmp_path}", *QUICK],
                 client_env(head))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"Job '\S+' succeeded", result.stdout + result.stderr)
    completed_summary(tmp_path)
    # The upload is the project without .rayignore'd paths (Ray unpacks it under the head's temp dir).
    packages = [p for p in Path(head.temp_dir).glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*")
                if p.is_dir()]
    assert packages, "the working dir was uploaded"
    package = packages[0]
    assert (package / "rayft" / "cli.py").is_file() and (package / CONFIG).is_file()
    assert not (package / "bench" / "results").exists() and not (package / ".git").exists()
    size = sum(f.stat().st_size for f in package.rglob("*") if f.is_file())
    assert size < 10 * 2**20, f"upload of {size / 2**20:.1f} MiB: check .rayignore"


def test_rayft_submit_follows_logs_and_returns_the_status(head, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(head.token + "\n")
    storage = tmp_path / "runs"
    result = run(rayft("submit", CONFIG, "--address", head.address, "--token-file", str(token_file),
                       "--set", f"storage.path={storage}", *QUICK), client_env(home=tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job_id = re.search(r"rayft: submitted (\S+) to ", result.stdout).group(1)
    assert "rayft: stage sft: completed" in result.stdout, "the job's logs were followed"
    assert f"rayft: job {job_id} SUCCEEDED" in result.stdout
    completed_summary(storage)

    status = run(rayft("submit", "--status", job_id, "--address", head.address), client_env(head))
    assert (status.returncode, status.stdout.strip()) == (0, "SUCCEEDED"), status.stderr
    logs = run(rayft("submit", "--logs", job_id, "--address", head.address), client_env(head))
    assert logs.returncode == 0 and f"rayft: done. run directory: {storage}" in logs.stdout


def test_a_failing_job_exits_non_zero_with_its_log_tail(head, tmp_path):
    result = run(rayft("submit", CONFIG, "--address", head.address, "--set", f"storage.path={tmp_path}",
                       "--set", "data.path=missing.jsonl"), client_env(head))
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"rayft: job \S+ FAILED", result.stdout)
    tail = result.stderr.split("log lines of", 1)[1]
    assert "missing.jsonl: no such file" in tail and "data.path" in tail


def test_a_stopped_job_reports_stopped(head, tmp_path):
    submitted = run(rayft("submit", CONFIG, "--address", head.address, "--no-wait",
                          "--set", f"storage.path={tmp_path}"), client_env(head))
    assert submitted.returncode == 0, submitted.stderr
    job_id = re.search(r"rayft: submitted (\S+) to ", submitted.stdout).group(1)
    stop = run(rayft("submit", "--stop", job_id, "--address", head.address), client_env(head))
    assert stop.returncode == 0 and job_id in stop.stdout, stop.stderr
    deadline = time.monotonic() + 120
    while True:
        status = run(rayft("submit", "--status", job_id, "--address", head.address), client_env(head))
        if status.stdout.strip() not in ("PENDING", "RUNNING") or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert (status.returncode, status.stdout.strip()) == (1, "STOPPED")


def test_submission_without_the_token_is_refused(head, tmp_path):
    request = urllib.request.Request(f"{head.address}/api/jobs/")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401

    plain = run([str(BIN / "ray"), "job", "submit", "--address", head.address, "--", "python", "-c", "print(1)"],
                client_env(home=tmp_path), timeout=120)
    assert plain.returncode != 0 and "Authentication required" in plain.stdout + plain.stderr

    no_token = run(rayft("submit", CONFIG, "--address", head.address), client_env(home=tmp_path), timeout=120)
    assert no_token.returncode == 2
    assert "requires a Ray auth token and none was sent" in no_token.stderr and "Traceback" not in no_token.stderr

    wrong = run(rayft("submit", "--status", "x", "--address", head.address),
                client_env(home=tmp_path, RAY_AUTH_TOKEN="not-the-token"), timeout=120)
    assert wrong.returncode == 2 and "refused the Ray auth token (403" in wrong.stderr
