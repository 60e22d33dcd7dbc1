"""A real local multi-node Ray cluster (a head and two `ray start --address` nodes labelled
node_a / node_b, one CPU each, token auth on): a 2-worker SFT through `rayft train --address`
runs one worker on each node (from the node ids the workers record) and writes to a storage path
all nodes share; and `ray job submit --working-dir .` of a training run to the same cluster
completes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import REPO
from local_cluster import RAY

pytestmark = [pytest.mark.ray, pytest.mark.multinode]

TRAIN_SETS = ["model.name=builtin:tiny-random", "training.max_steps=4", "training.save_steps=2",
              "training.logging_steps=1", "training.batch_size=4", "data.max_length=160", "data.eval_split=0",
              "scaling.num_workers=2", "scaling.placement_strategy=STRICT_SPREAD", "eval.enabled=false"]



def _sets(storage) -> list[str]:
    return [a for s in [*TRAIN_SETS, f"storage.path={storage}"] for a in ("--set", s)]


def test_workers_on_two_nodes_with_shared_storage(cluster, tmp_path):
    config = REPO / "jobs" / "configs" / "sft_tiny.yaml"
    done = subprocess.run([sys.executable, "-m", "rayft", "train", str(config), *_sets(tmp_path),
                           "--address", cluster.address, "--run-name", "mn"],
                          env=cluster.env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + cluster.logs()
    summary = json.loads((tmp_path / "mn" / "sft" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 4
    nodes = {w["rank"]: w["node_id"] for w in summary["workers"]}
    assert len(set(nodes.values())) == 2, f"both workers ran on one node: {nodes}"
    assert {cluster.label_of(n) for n in nodes.values()} == {"node_a", "node_b"}
    # Both ranks wrote into the shared storage: every checkpoint holds each rank's manifest.
    checkpoints = sorted((tmp_path / "mn" / "sft" / "ray").glob("checkpoint_step*/checkpoint"))
    assert checkpoints and all((c / "rayft-manifest-rank1.json").is_file() for c in checkpoints)
    assert (tmp_path / "mn" / "sft" / "adapter" / "adapter_model.safetensors").is_file()


def test_ray_job_submit_runs_training(cluster, tmp_path):
    """The working dir (this repository, less .gitignore / .rayignore) is uploaded; the job's
    entrypoint runs `python -m rayft train` on the head node against the cluster."""
    entry = [sys.executable, "-m", "rayft", "train", "jobs/configs/sft_tiny.yaml", *_sets(tmp_path),
             "--run-name", "job"]
    done = subprocess.run([RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".",
                           "--", *entry], cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout.lower()
    summary = json.loads((tmp_path / "job" / "sft" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 4
    assert len({w["node_id"] for w in summary["workers"]}) == 2
    uploaded = re.search(r"package (gcs://_ray_pkg_\w+\.zip)", done.stdout + done.stderr)
    assert uploaded, "the working dir was packaged and uploaded to the cluster"
