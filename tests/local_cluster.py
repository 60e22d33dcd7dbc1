"""A real multi-node Ray cluster on 127.0.0.1, made of `ray start --block` processes: a head and
worker nodes, each with its own custom resource label, its own ports and its own temp dir (so no
other Ray on this machine, and no `ray.init()` elsewhere, ever finds or joins it). Token auth is on
with a token of its own (RAY_AUTH_TOKEN), leaving ~/.ray/auth_token alone. `stop()` ends only the
process trees it started."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import REPO

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TERM_GRACE_S = 5


class LocalCluster:
    def __init__(self, labels: list[str], rayft_home: str):
        self.root = Path(tempfile.mkdtemp(prefix="rft-mn-", dir="/tmp"))  # short: Ray's socket paths
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        token = secrets.token_hex(32)
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(PYTHONPATH=str(REPO), RAYFT_HOME=rayft_home, PATH=path, RAY_AUTH_MODE="token",
                        RAY_AUTH_TOKEN=token, RAY_TRAIN_ENABLE_PRINT_PATCH="0", TOKENIZERS_PARALLELISM="false",
                        # A busy machine starts a node's agents slowly; the defaults give up in ~15-30 s.
                        RAY_agent_register_timeout_ms="180000", RAY_raylet_start_wait_time_s="180")
        self.labels = list(labels)
        self.procs: list[subprocess.Popen] = []
        self.killed: set[int] = set()  # `ray start` processes kill_node ended on purpose

    def _ports(self, first_worker_port: int) -> list[str]:
        return ["--node-ip-address=127.0.0.1", f"--node-manager-port={free_port()}",
                f"--object-manager-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--min-worker-port={first_worker_port}",
                f"--max-worker-port={first_worker_port + 199}", "--object-store-memory=150000000", "--block"]

    def _start(self, args: list[str], name: str) -> None:
        log = (self.root / f"{name}.log").open("w")
        self.procs.append(subprocess.Popen([RAY, "start", *args], env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def start(self, timeout: float = 300) -> "LocalCluster":
        # Worker port ranges above the ephemeral range (where free_port() picks), one block per node.
        base = 61000 + (os.getpid() % 6) * 600
        self._start(["--head", f"--port={self.port}", "--num-cpus=0", '--resources={"head_node": 1}',
                     f"--temp-dir={self.root / 'ray'}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}", *self._ports(base)], "head")
        self.wait_nodes(1, timeout)
        for i, label in enumerate(self.labels, start=1):  # one at a time: a raylet gets 30 s to register
            self._start([f"--address={self.address}", "--num-cpus=1", f'--resources={{"{label}": 1}}',
                         *self._ports(base + 200 * i)], label)
            self.wait_nodes(1 + i, timeout)
        return self

    def add_node(self, label: str, timeout: float = 300) -> None:
        """Join one more 1-CPU worker node labelled `label` (a node that comes while a stage trains)."""
        base = 61000 + (os.getpid() % 6) * 600
        self.labels.append(label)
        self._start([f"--address={self.address}", "--num-cpus=1", f'--resources={{"{label}": 1}}',
                     *self._ports(base + 200 * len(self.labels))], label)
        self.wait_nodes(len(self.labels) + 1, timeout)

    def kill_node(self, label: str) -> None:
        """SIGKILL the whole process tree of node `label` (its raylet, agents and workers): a node
        that disappears without notice."""
        import psutil

        index = 1 + self.labels.index(label)  # procs[0] is the head
        root = psutil.Process(self.procs[index].pid)
        family = [root, *root.children(recursive=True)]
        for proc in family:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=30)
        self.killed.add(self.procs[index].pid)

    def node_id_of(self, label: str) -> str | None:
        return next((n["node_id"] for n in self.nodes() if label in n["resources"]), None)

    def nodes(self) -> list[dict]:
        """Alive nodes as {node_id, resources}, read by a short-lived driver of its own."""
        code = ("import json, ray; ray.init(address='%s', logging_level='ERROR'); "
                "print(json.dumps([{'node_id': n['NodeID'], 'resources': n['Resources']} "
                "for n in ray.nodes() if n['Alive']]))" % self.address)
        done = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            return []
        return json.loads(done.stdout.strip().splitlines()[-1])

    def wait_nodes(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.procs if p.pid not in self.killed):
                raise RuntimeError(f"a `ray start` exited early; logs in {self.root}:\n{self.logs()}")
            if len(self.nodes()) >= count:
                return
            time.sleep(2)
        raise TimeoutError(f"{count} Ray nodes did not come up in {timeout:.0f}s; logs in {self.root}")

    def label_of(self, node_id: str) -> str | None:
        for node in self.nodes():
            if node["node_id"] == node_id:
                return next((k for k in node["resources"] if k in self.labels or k == "head_node"), None)
        return None

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM the `ray start --block` processes (they stop their nodes), workers first; then
        SIGKILL whatever is left of the process trees they had (listed before any signal, since
        the trees' processes are re-parented once their `ray start` exits)."""
        import psutil

        family = []
        for proc in self.procs:
            try:
                family += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        # A few of a node's processes never exit on SIGTERM (the wait always ran out: 30 s of every
        # run's teardown); the cluster is the test's own, so the rest is killed after a short grace.
        _, left = psutil.wait_procs(family, timeout=TERM_GRACE_S)
        for proc in left:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=30)
        for proc in self.procs:
            proc.wait(timeout=30)
