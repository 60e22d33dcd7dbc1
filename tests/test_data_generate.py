"""`rayft data generate` on a local teacher (the tiny random model, hf engine: mechanics, not
quality): a run killed mid-way and rerun writes exactly what an uninterrupted run writes (a line
torn by the kill is discarded), self-instruct counts add up, and bad input is refused by name.
The endpoint teacher is tested against the real Serve app in tests/test_serve_app.py; the vLLM
engine in tests/test_generation_vllm.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import yaml

from rayft.cli import main

DROPS = ("empty", "cut_at_limit", "wrong_format", "rejected_by_endpoint")


def _config(tmp_path, teacher: dict, name: str = "gen.yaml"):
    config = tmp_path / name
    config.write_text(yaml.safe_dump({"model": {"name": "builtin:tiny-random"}, "eval": {"batch_size": 8},
                                      "generation": {"teacher": teacher}}))
    return config


def _run(config, out, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rayft", "data", "generate", str(config), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_a_killed_run_continues_where_it_stopped(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Question number {i}: what comes after {i}?\n" for i in range(160)))
    # Sampled (greedy, the tiny model says only special tokens), seeded per chunk; each answer ended at
    # its first space (random words): short, never cut.
    config = _config(tmp_path, {"prompts": str(prompts), "max_new_tokens": 8, "stop": [" "], "chunk_rows": 4,
                                "temperature": 0.8})
    whole = tmp_path / "whole.jsonl"
    assert main(["data", "generate", str(config), "--out", str(whole)]) == 0

    resumed = tmp_path / "resumed.jsonl"
    journal = tmp_path / "resumed.jsonl.partial.jsonl"
    first = _run(config, resumed)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 3:  # the settings line + two chunks
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not resumed.exists(), "the run finished before the kill: nothing was tested"
    with journal.open("a") as f:  # a line torn by the kill
        f.write('{"phase": "answer", "i": 99, "seed": 99, "tok')
    second = _run(config, resumed)
    said = second.communicate(timeout=300)[0]
    assert second.returncode == 0, said[-3000:]
    assert "continuing from" in said
    assert resumed.read_text() == whole.read_text()
    stats = json.loads((tmp_path / "resumed.jsonl.stats.json").read_text())["answers"]
    assert stats["questions"] == 160 == sum(stats[k] for k in DROPS) + sum(stats["filtered"].values()) + \
        stats["duplicates"] + stats["written"]
    assert not journal.exists()
    rows = [json.loads(line) for line in resumed.read_text().splitlines()]
    assert rows and all(r["provenance"]["engine"] == "hf" and r["provenance"]["teacher"] == "builtin:tiny-random"
                        for r in rows)
    assert len({r["provenance"]["seed"] for r in rows}) == len(rows)


def test_self_instruct_instructions_are_counted(tmp_path, capsys):
    """The tiny model's replies never end their first line within 12 tokens: each of the 12 asked
    is journaled as cut, and the run stops before answering, saying so (the embedded model writes
    real ones in tests/test_generation_vllm.py)."""
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": f"Describe animal {i}."}) + "\n" for i in range(5)))
    config = _config(tmp_path, {"prompts": str(seeds), "max_new_tokens": 8, "temperature": 0.9,
                                "self_instruct": {"num_instructions": 12, "examples_per_prompt": 2,
                                                  "max_new_tokens": 12}})
    out = tmp_path / "si.jsonl"
    assert main(["data", "generate", str(config), "--out", str(out)]) == 2
    assert "no new instruction kept of 12 asked" in capsys.readouterr().err and not out.exists()
    records = [json.loads(line) for line in (tmp_path / "si.jsonl.partial.jsonl").read_text().splitlines()[1:]]
    assert sorted(r["i"] for r in records if r["phase"] == "instruction") == list(range(12))
    assert {r["status"] for r in records} == {"cut_at_limit"} and len({r["seed"] for r in records}) == 12


def test_bad_input_is_refused_by_name(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello?\n")
    before = prompts.read_bytes()
    config = _config(tmp_path, {"prompts": str(prompts)})
    assert main(["data", "generate", str(config), "--out", str(prompts)]) == 2
    assert "input files are never modified" in capsys.readouterr().err and prompts.read_bytes() == before
    no_model = _config(tmp_path, {"endpoint": "http://127.0.0.1:9/v1"}, "endpoint.yaml")
    assert main(["data", "generate", str(no_model), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "endpoint_model" in capsys.readouterr().err
    unreachable = _config(tmp_path, {"endpoint": "http://127.0.0.1:9/v1", "endpoint_model": "m",
                                     "prompts": str(prompts)}, "down.yaml")
    assert main(["data", "generate", str(unreachable), "--out", str(tmp_path / "y.jsonl")]) == 2
    assert "cannot reach http://127.0.0.1:9/v1" in capsys.readouterr().err
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"model": {"name": "builtin:tiny-random"}}))
    assert main(["data", "generate", str(plain), "--out", str(tmp_path / "z.jsonl")]) == 2
    assert "generation.teacher" in capsys.readouterr().err
