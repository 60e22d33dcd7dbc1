"""A real local Ray head for job-submission tests: `ray start --head --block` with token auth,
the dashboard on 127.0.0.1, every port picked free (other Ray clusters may run on this machine),
its own temp dir, and teardown of ONLY this head's process group (never `ray stop`, which would
stop every Ray on the machine)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--node-manager-port",
              "--object-manager-port", "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port",
              "--metrics-export-port", "--runtime-env-agent-port")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class HeadStartError(RuntimeError):
    """`ray start --head` did not come up."""


class LocalRayHead:
    def __init__(self, num_cpus: int = 2, env: dict | None = None, bin_dir: Path = BIN):
        """`bin_dir`: the environment whose `ray` starts the head (another venv's, e.g. .venv-vllm)."""
        self.token = secrets.token_hex(24)
        # Short path: Ray's unix sockets live under the temp dir (108-byte limit).
        self.temp_dir = tempfile.mkdtemp(prefix="rk8s-", dir="/tmp")
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self.dashboard_port = ports["--dashboard-port"]
        self.gcs_address = f"127.0.0.1:{ports['--port']}"
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        worker_lo = 20000 + (os.getpid() % 200) * 100  # a worker-port range unlikely to collide
        args = [str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--num-cpus={num_cpus}",
                "--num-gpus=0", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                f"--min-worker-port={worker_lo}", f"--max-worker-port={worker_lo + 99}",
                *(f"{flag}={port}" for flag, port in ports.items())]
        self.env = {**os.environ, **(env or {}),
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    # jobs run `python`: make it this venv's
                    "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.env.pop("RAY_ADDRESS", None)
        self.log = open(Path(self.temp_dir) / "ray-start.log", "w")
        self.proc = subprocess.Popen(args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # its own process group, killed as one

    def wait_ready(self, timeout_s: float = 240) -> None:
        """Until `ray start` reports the node started and the Jobs API answers an authenticated request."""
        deadline = time.monotonic() + timeout_s
        request = urllib.request.Request(f"{self.address}/api/jobs/",
                                         headers={"Authorization": f"Bearer {self.token}"})
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HeadStartError(f"ray start exited with {self.proc.returncode}: {self.start_log()}")
            if "Ray runtime started" in self.start_log():
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        if response.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(1)
        raise HeadStartError(f"the Ray head did not answer within {timeout_s}s: {self.start_log()}")

    @classmethod
    def start(cls, attempts: int = 3, **kwargs) -> "LocalRayHead":
        """A ready head. Ray gives its raylet a fixed 30 s to register, which an overloaded machine
        can miss; such a start is stopped and retried on fresh ports."""
        for attempt in range(1, attempts + 1):
            head = cls(**kwargs)
            try:
                head.wait_ready()
                return head
            except HeadStartError:
                head.stop()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def start_log(self) -> str:
        return (Path(self.temp_dir) / "ray-start.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to this head's process group only."""
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        # Some of the head's processes outlive SIGTERM (the 20 s grace always ran out); it is the
        # test's own head, so it is killed after a short grace.
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self._alive(pgid):
                time.sleep(0.5)
            if not self._alive(pgid):
                break
        self.proc.wait(timeout=10)
        self.log.close()

    def _alive(self, pgid: int) -> bool:
        self.proc.poll()  # reap the leader, or its zombie keeps the group "alive"
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
