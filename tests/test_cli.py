"""The CLI as a user runs it: exit codes 0 / 2, messages naming the problem, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

RAYFT = [sys.executable, "-m", "rayft"]


def run(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*RAYFT, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_console_script_installed():
    script = Path(sys.executable).with_name("rayft")
    assert script.is_file(), "pip install -e . must create the rayft console script"


def test_config_schema_prints_json_schema():
    from jsonschema import Draft202012Validator

    out = run("config", "schema")
    assert out.returncode == 0, out.stderr
    Draft202012Validator.check_schema(json.loads(out.stdout))


def test_config_show_fills_defaults(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("training: {lr: 0.001}\n")
    out = run("config", "show", str(cfg), "--set", "scaling.num_workers=3")
    assert out.returncode == 0, out.stderr
    assert "num_workers: 3" in out.stdout and "lr: 0.001" in out.stdout and "type: sft" in out.stdout


@pytest.mark.parametrize("content,overrides,expected", [
    ("trainng: {lr: 1}\n", [], "trainng: unknown key; did you mean 'training'?"),
    ("training: {lr: 1}\n", ["--set", "training.max_stepz=3"], "training.max_stepz: unknown key; did you mean 'max_steps'?"),
    ("training: {lr: 1}\n", ["--set", "oops"], "expected KEY=VALUE"),
    ("model: [\n", [], "not valid YAML"),
])
def test_bad_config_exits_2_naming_the_problem(tmp_path, content, overrides, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(content)
    out = run("train", str(cfg), *overrides)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_config_file_exits_2(tmp_path):
    out = run("train", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "config file not found" in out.stderr


def test_bad_data_row_exits_2_with_file_and_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "a", "answer": "b"}\n{"question": "c", "answer": }\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: 'builtin:tiny-random'}}\ndata: {{path: {data.name}}}\nstorage: {{path: {tmp_path}}}\n")
    out = run("train", str(cfg))
    assert out.returncode == 2, out.stderr
    assert f"{data}:2: not valid JSON" in out.stderr and "Traceback" not in out.stderr


def test_on_error_fail_exits_2_naming_each_bad_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "a", "answer": "b"}\n{"question": "c"}\nnot json\n{"question": "e", "answer": ""}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: 'builtin:tiny-random'}}\ndata: {{path: {data.name}, on_error: fail}}\n"
                   f"storage: {{path: {tmp_path}}}\n")
    out = run("train", str(cfg))
    assert out.returncode == 2, out.stderr
    for line in (2, 3, 4):
        assert f"{data}:{line}: " in out.stderr
    assert "3 bad rows" in out.stderr and "data.on_error: skip" in out.stderr and "Traceback" not in out.stderr


def test_unknown_builtin_model_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: 'builtin:smollm3'}}\nstorage: {{path: {tmp_path}}}\n")
    out = run("train", str(cfg))
    assert out.returncode == 2 and "unknown builtin model 'builtin:smollm3'" in out.stderr


def test_models_lists_builtins():
    out = run("models")
    assert out.returncode == 0 and "builtin:smollm2-135m-instruct" in out.stdout and "builtin:tiny-random" in out.stdout


@pytest.mark.ray
def test_train_sft_tiny_from_the_command_line(tmp_path):
    """The issue's done-when check, as a user types it (a fresh local Ray is started by the command)."""
    out = run("train", str(REPO / "jobs" / "configs" / "sft_tiny.yaml"), "--set", f"storage.path={tmp_path}",
              "--set", "training.max_steps=6", "--set", "training.logging_steps=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "sft-tiny" / "sft" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 6
    assert "run directory:" in out.stdout and str(tmp_path / "sft-tiny") in out.stdout
    assert "[sft] step 6/6" in out.stdout + out.stderr, "progress lines are shown"


def test_data_inspect_shows_stats_examples_and_duplicates(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"question": "Q{i}?", "answer": "A{i}."}}\n' for i in range(20))
                    + '{"question": "q3?", "answer": "a3"}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name: 'builtin:tiny-random'}}\ndata: {{path: {data.name}, eval_split: 4}}\n")
    out = run("data", "inspect", str(cfg), "--examples", "1")
    assert out.returncode == 0, out.stderr
    assert "rows read" in out.stdout and "21" in out.stdout and "example 1" in out.stdout
    assert "duplicates removed" in out.stdout and "padding: packing" in out.stdout and "p90" in out.stdout
    assert f"{data}:21 repeats" in out.stdout.replace("\n", "") and "### Question:" in out.stdout
