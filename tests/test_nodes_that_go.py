"""Nodes that go away, on a real local multi-node Ray cluster (tests/local_cluster.py: `ray start`
processes on 127.0.0.1, one CPU per worker node): a node drained with a preemption notice
mid-stage (what a spot reclaim, or a KubeRay pod's preStop hook, gives Ray), a whole node killed
without notice, and a node that joins while an elastic stage trains. Each stage must end at its
last step with every step trained once (no duplicate, no gap in the loss history)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEMO_DATA, REPO
from local_cluster import RAY, LocalCluster
from resilience import alive

pytestmark = [pytest.mark.ray, pytest.mark.multinode]

SETS = ["model.name=builtin:tiny-random", f"data.path={DEMO_DATA}", "data.template=alpaca", "data.max_length=160",
        "data.eval_split=0", "eval.enabled=false", "training.logging_steps=1", "training.batch_size=2",
        "training.lr=1e-3", "scaling.resources_per_worker={CPU: 1}", "tracking.tensorboard=false"]


@pytest.fixture
def cluster():
    started = LocalCluster(["node_a", "node_b"], os.environ["RAYFT_HOME"])
    try:
        yield started.start()
    finally:
        started.stop()


def _train(cluster: LocalCluster, storage: Path, run: str, extra: list[str]) -> subprocess.Popen:
    args = [a for s in [*SETS, f"storage.path={storage}", *extra] for a in ("--set", s)]
    log = (storage / f"{run}.log").open("w")
    config = REPO / "jobs" / "configs" / "sft_tiny.yaml"
    return subprocess.Popen([sys.executable, "-m", "rayft", "train", str(config), *args, "--address", cluster.address,
                             "--run-name", run], env=cluster.env, stdout=log, stderr=subprocess.STDOUT)


def _step(stage_dir: Path) -> int:
    try:
        return json.loads((stage_dir / "progress.json").read_text()).get("global_step") or 0
    except (OSError, ValueError):
        return 0


def _wait_for_step(proc: subprocess.Popen, stage_dir: Path, step: int, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while _step(stage_dir) < step:
        assert proc.poll() is None, f"training ended before step {step}: {_log(stage_dir)}"
        assert time.time() < deadline, f"no step {step} in {timeout:.0f} s: {_log(stage_dir)}"
        time.sleep(0.5)


def _log(stage_dir: Path) -> str:
    log = stage_dir.parent.parent / f"{stage_dir.parent.name}.log"
    return log.read_text()[-4000:] if log.is_file() else ""


def _finish(proc: subprocess.Popen, stage_dir: Path, cluster: LocalCluster, timeout: float = 900) -> dict:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the stage did not finish in {timeout:.0f} s: {_log(stage_dir)}\n{cluster.logs()}")
    assert proc.returncode == 0, _log(stage_dir) + cluster.logs()
    summary = json.loads((stage_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    return summary


def _each_step_once(summary: dict, last: int) -> None:
    """The loss history of what was published: steps 1..last, each once."""
    steps = [step for step, _ in summary["loss_history"]]
    assert steps == list(range(1, last + 1)), steps


def _worker_nodes(stage_dir: Path) -> list[set[str]]:
    attempts = [json.loads(line) for line in (stage_dir / "attempts.jsonl").read_text().splitlines() if line]
    return [{w["node_id"] for w in a["workers"]} for a in attempts]


def test_a_preemption_notice_checkpoints_at_the_step_and_redoes_none(cluster, tmp_path):
    """`ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION` on the worker's node mid-stage, with a
    deadline: the stage checkpoints at each step boundary until the deadline, Ray Train restarts it
    on the other node, and it resumes from the last finished step: 0 steps redone (no periodic
    checkpoint is configured, so without the notice every step so far would be redone)."""
    stage_dir = tmp_path / "pre" / "sft"
    proc = _train(cluster, tmp_path, "pre", ["training.max_steps=40", "training.save_steps=1000",
                                             "scaling.num_workers=1"])
    _wait_for_step(proc, stage_dir, 5)
    (node,) = _worker_nodes(stage_dir)[0]
    drained = subprocess.run([RAY, "drain-node", "--address", cluster.address, "--node-id", node, "--reason",
                              "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim (test)",
                              "--deadline-remaining-seconds", "12"], env=cluster.env, capture_output=True, text=True,
                             timeout=120)
    assert drained.returncode == 0, drained.stderr
    summary = _finish(proc, stage_dir, cluster)
    assert summary["global_step"] == 40
    assert summary["preemption_notices"] >= 1 and summary["preempted_nodes"] == [node]
    assert summary["restarts"] >= 1 and summary["steps_redone"] == 0, summary["attempt_history"]
    resumed = summary["attempt_history"][-1]["resumed_from_step"]
    assert resumed >= 5 and resumed in summary["checkpointed_on_preemption_at_steps"]
    assert node not in _worker_nodes(stage_dir)[-1]  # it moved off the drained node
    _each_step_once(summary, 40)


def test_a_sigterm_to_one_worker_checkpoints_before_it_exits(cluster, tmp_path):
    """SIGTERM (what Kubernetes sends a pod) to one of two worker processes mid-stage, no periodic
    checkpoint: the workers save at the next step boundary, the signalled process exits once Ray
    Train has committed that checkpoint, Ray Train restarts the group, and the stage resumes from
    it: 0 steps redone (without the handler every step so far would be redone)."""
    stage_dir = tmp_path / "term" / "sft"
    proc = _train(cluster, tmp_path, "term", ["training.max_steps=30", "training.save_steps=1000",
                                              "scaling.num_workers=2", "scaling.max_failures=1",
                                              "scaling.placement_strategy=SPREAD"])
    _wait_for_step(proc, stage_dir, 5)
    first = json.loads((stage_dir / "attempts.jsonl").read_text().splitlines()[0])
    pid = next(w["pid"] for w in first["workers"] if w["rank"] == 1)
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 60
    while alive(pid):  # it saves at the next step boundary, then exits: well inside its 25 s grace
        assert time.time() < deadline, "the signalled worker did not exit"
        time.sleep(0.2)
    summary = _finish(proc, stage_dir, cluster)
    assert summary["global_step"] == 30 and summary["sigterms"] == 1, summary
    assert summary["restarts"] >= 1 and summary["steps_redone"] == 0, summary["attempt_history"]
    resumed = summary["attempt_history"][-1]["resumed_from_step"]
    assert resumed >= 5 and resumed in summary["checkpointed_on_preemption_at_steps"]
    assert pid not in [w["pid"] for w in json.loads((stage_dir / "attempts.jsonl").read_text().splitlines()[-1])["workers"]]
    _each_step_once(summary, 30)


@pytest.mark.slow
def test_a_killed_node_leaves_the_stage_on_the_other_one(cluster, tmp_path):
    """A 2-worker elastic stage (1-2 workers) loses a whole node (raylet and workers SIGKILLed, no
    notice): it shrinks to the remaining node, resumes from its last checkpoint with twice the
    accumulation steps (same global batch), and ends at its last step."""
    stage_dir = tmp_path / "kill" / "sft"
    proc = _train(cluster, tmp_path, "kill", ["training.max_steps=24", "training.save_steps=2",
                                              "scaling.num_workers=1-2", "scaling.max_failures=2",
                                              "scaling.placement_strategy=SPREAD"])
    _wait_for_step(proc, stage_dir, 5)
    assert len(_worker_nodes(stage_dir)[0]) == 2
    cluster.kill_node("node_b")
    summary = _finish(proc, stage_dir, cluster)
    assert summary["global_step"] == 24
    resize = summary["resizes"][0]
    assert (resize["workers_before"], resize["workers_after"], resize["grad_accum_after"]) == (2, 1, 2), summary["resizes"]
    # No notice, so the steps since the last whole checkpoint are redone: fewer than two save
    # intervals (a checkpoint being written when the node died is incomplete, verified and skipped).
    assert summary["steps_redone"] < 2 * 2, summary["attempt_history"]
    _each_step_once(summary, 24)


@pytest.mark.slow
def test_an_elastic_stage_grows_when_a_node_joins(cluster, tmp_path):
    """Asked for 2-3 workers on a cluster with room for 2: it starts with 2; a third node joins
    while it trains and Ray Train grows the group to 3 (gradient accumulation 3 -> 2: the global
    batch stays 2 x 3 x 2 = 12 rows); it ends at its last step."""
    stage_dir = tmp_path / "grow" / "sft"
    proc = _train(cluster, tmp_path, "grow", ["training.max_steps=30", "training.save_steps=2", "training.grad_accum=2",
                                              "scaling.num_workers=2-3", "scaling.elastic_check_s=5",
                                              "scaling.placement_strategy=SPREAD"])
    _wait_for_step(proc, stage_dir, 3)
    assert len(_worker_nodes(stage_dir)[0]) == 2
    cluster.add_node("node_c")
    summary = _finish(proc, stage_dir, cluster)
    assert summary["global_step"] == 30
    grew = [r for r in summary["resizes"] if r["workers_after"] > r["workers_before"]]
    assert grew and grew[0]["workers_after"] == 3 and grew[0]["grad_accum_after"] == 2, summary["resizes"]
    assert len(_worker_nodes(stage_dir)[-1]) == 3
    _each_step_once(summary, 30)
