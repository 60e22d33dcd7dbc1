"""The benchmark suite's registry covers every script in bench/, and `run_all.py --list` runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))


def test_every_benchmark_script_is_registered():
    import run_all

    scripts = {p.stem for p in (REPO / "bench").glob("*.py")} - run_all.HELPERS
    registered = {Path(b.path).stem for b in run_all.BENCHES}
    assert scripts <= registered, f"add to bench/run_all.py BENCHES: {sorted(scripts - registered)}"


def test_every_docs_section_names_its_command():
    text = (REPO / "docs" / "benchmarks.md").read_text()
    sections = text.split("<!-- BEGIN ")[1:]
    assert sections, "docs/benchmarks.md has no benchmark sections"
    for section in sections:
        name = section.split(" -->", 1)[0]
        body = section.split(f"<!-- END {name} -->", 1)[0]
        assert "command" in body.lower() or name == "suite", f"section {name} does not name its command"


def test_list_and_unknown_names():
    listed = subprocess.run([sys.executable, "bench/run_all.py", "--list"], cwd=REPO, capture_output=True, text=True)
    assert listed.returncode == 0 and "sft_throughput" in listed.stdout
    bad = subprocess.run([sys.executable, "bench/run_all.py", "--only", "nope"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown benchmark(s): nope" in bad.stderr


def test_serve_benchmark_app_args_are_a_valid_config_with_its_adapter_store(tmp_path):
    """The serving benchmark's app must serve the adapters it registers (a joined line once
    commented the store out, and every adapter request got 404)."""
    from rayft.config.load import validate
    from serve_throughput import app_args

    store = tmp_path / "store"
    pipeline = validate(app_args("tiny-model", store, batching=True, max_adapters=3, batch_wait=0.02), "bench")
    assert pipeline.serve.adapter_store == str(store)
    assert pipeline.serve.max_adapters_per_replica == 3
    assert pipeline.serve.batching.enabled and pipeline.serve.batching.batch_wait_timeout_s == 0.02
