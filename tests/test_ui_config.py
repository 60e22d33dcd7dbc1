"""`rayft ui` without a browser: the New-run form's config (same schema as `rayft train`, confined
to the page's data folders and storage), uploads, and the command line's safety checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import DEMO_DATA
from rayft.cli import main
from rayft.core.errors import UserError
from rayft.ui.backend import Backend
from rayft.ui.config_form import DEMO_DATASET, Form, check_config, check_run_name, form_to_config, to_yaml


@pytest.fixture
def backend(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.jsonl").write_text(DEMO_DATA.read_text())
    return Backend(tmp_path / "runs", [data])


def check(text: str, backend: Backend):
    return check_config(text, backend.allowed_data, backend.storage)


def test_the_default_form_is_a_valid_demo_config(backend):
    loaded, problem = check(to_yaml(form_to_config(Form())), backend)
    assert problem is None
    stage = loaded.pipeline.stages[0]
    assert stage.data.path == str(DEMO_DATA.resolve()) and stage.data.template == "chat"
    assert loaded.pipeline.storage.path == str(backend.storage)


@pytest.mark.parametrize("adapter, expected", [("ia3", ("ia3", None)), ("qlora", ("lora", "4bit")),
                                               ("full", ("full", None))])
def test_every_adapter_the_page_offers_is_a_valid_config(backend, adapter, expected):
    """The page's radio offered `qlora`, which the schema has no type for (the run was refused)."""
    loaded, problem = check(to_yaml(form_to_config(Form(adapter=adapter))), backend)
    assert problem is None, problem
    quantization = loaded.pipeline.model.quantization
    assert (loaded.pipeline.adapter.type, quantization and quantization.mode) == expected


@pytest.mark.parametrize("change, field, words", [
    ({"lr": "-1"}, "training.lr", "greater than 0"),
    ({"max_steps": "ten"}, "training.max_steps", "integer"),
    ({"r": "0"}, "adapter.r", "greater than"),
    ({"stages": ("sft", "nope")}, "stages", "nope"),
])
def test_a_bad_field_is_named(backend, change, field, words):
    form = Form(**{**Form().__dict__, **change})
    loaded, problem = check(to_yaml(form_to_config(form)), backend)
    assert loaded is None and field in problem and words in problem, problem


def test_data_only_from_the_page_s_folders(backend, tmp_path):
    inside = backend.data_dirs[0] / "rows.jsonl"
    assert check(f"model: {{name: 'builtin:tiny-random'}}\ndata: {{path: {inside}}}\n", backend)[1] is None
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(DEMO_DATA.read_text())
    for text, words in [
        (f"data: {{path: {outside}}}", "outside the data folders"),
        (f"data: {{path: {backend.data_dirs[0]}/../elsewhere.jsonl}}", "outside the data folders"),
        (f"data: {{path: {backend.data_dirs[0]}/missing.jsonl}}", "no such file"),
        ("data: {path: 'hf:tatsu-lab/alpaca'}", "local files only"),
        (f"data: {{path: {inside}, eval_path: /etc/hostname}}", "data.eval_path"),
        (f"data: {{path: {inside}}}\nstorage: {{path: /tmp/other}}", "storage.path"),
        (f"data: {{path: {inside}}}\ntune: {{search_space: {{training.lr: 'grid[1e-4]'}}}}", "rayft tune"),
        ("data: [unclosed", "line 1"),
        ("- a list", "YAML mapping"),
    ]:
        loaded, problem = check(text, backend)
        assert loaded is None and words in problem, (text, problem)


def test_run_names_and_uploads(backend, tmp_path):
    assert check_run_name("ui-2026.12_05") is None
    for bad in ("", "../escape", "a/b", "-x", "x" * 81):
        assert check_run_name(bad)
    upload = tmp_path / "upload.tmp"
    upload.write_text('{"instruction": "x", "output": "y"}\n')
    first = backend.save_upload(str(upload), "mine.jsonl")
    second = backend.save_upload(str(upload), "../../mine.jsonl")  # a path in the name is dropped
    assert first.parent == second.parent == backend.uploads and first != second  # never overwritten
    assert str(second) in backend.data_files() and upload.read_text() == second.read_text()
    with pytest.raises(UserError, match="expected a .jsonl"):
        backend.save_upload(str(upload), "run.sh")
    assert DEMO_DATASET not in backend.data_files()


def test_start_run_refuses_bad_names_and_existing_runs_before_any_job(backend):
    text = to_yaml(form_to_config(Form(model="builtin:tiny-random")))
    with pytest.raises(UserError, match="run name"):
        backend.start_run(text, "../x")
    (backend.storage / "taken").mkdir()
    with pytest.raises(UserError, match="exists already"):
        backend.start_run(text, "taken")
    with pytest.raises(UserError, match="training.lr"):
        backend.start_run(text.replace("lr: 0.001", "lr: -1"), "fresh")
    assert backend._jobs is None  # nothing reached Ray


def test_cli_refuses_a_public_host_without_a_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAYFT_UI_TOKEN", raising=False)
    assert main(["ui", "--host", "0.0.0.0", "--storage", str(tmp_path)]) == 2
    assert "needs a token" in capsys.readouterr().err
    assert main(["ui", "--data-dir", str(tmp_path / "nope"), "--storage", str(tmp_path)]) == 2
    assert "--data-dir" in capsys.readouterr().err
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["ui", "--host", "0.0.0.0", "--token-file", str(empty), "--storage", str(tmp_path)]) == 2
    assert "empty" in capsys.readouterr().err


def test_run_states_from_the_files_runs_write(tmp_path):
    """Status precedence and the current stage, on run folders laid out as the launcher writes them."""
    from rayft.records.listing import list_runs, run_state

    run = tmp_path / "r1"
    (run / "sft").mkdir(parents=True)
    (run / "config.yaml").write_text("stages:\n- {name: sft, type: sft}\n- {name: dpo, type: dpo}\n")
    (run / "sft" / "summary.json").write_text(json.dumps({"status": "completed", "global_step": 10,
                                                          "train_loss": 0.5, "eval_loss": 0.4}))
    state = run_state(run)
    assert state.status == "running" and [s.status for s in state.stages] == ["completed", "pending"]
    assert state.current.name == "sft" and state.current.step == 10 and state.current.loss == 0.5
    (run / "dpo").mkdir()
    (run / "dpo" / "summary.json").write_text(json.dumps({"status": "running"}))
    (run / "dpo" / "progress.json").write_text(json.dumps({"global_step": 3, "max_steps": 20,
                                                           "losses": [[2, 0.7], [3, 0.65]]}))
    state = run_state(run)
    assert state.status == "running" and state.current.name == "dpo"
    assert (state.current.step, state.current.max_steps, state.current.loss) == (3, 20, 0.65)
    (run / "dpo" / "summary.json").write_text(json.dumps({"status": "failed", "error": "boom\nmore"}))
    assert run_state(run).status == "failed" and run_state(run).current.error.startswith("boom")
    (tmp_path / "not-a-run").mkdir()
    assert [r.name for r in list_runs(tmp_path)] == ["r1"]


@pytest.mark.parametrize("failure_first", [True, False])
def test_a_sweep_s_stop_outranks_the_failure_it_causes_in_either_order(tmp_path, failure_first):
    """A scheduler's stop kills the trial's workers; the trial's driver then records a failure, in
    another process, before or after the sweep records the stop. Either way the stage reads stopped
    (the CI run of 2026-12-07 listed an ASHA-stopped trial as failed)."""
    from rayft.records.listing import run_state
    from rayft.records.rundir import mark_stopped, read_summary
    from rayft.train.launch import record_failure

    run = tmp_path / "trial"
    (run / "sft").mkdir(parents=True)
    (run / "config.yaml").write_text("stages:\n- {name: sft, type: sft}\n")
    (run / "sft" / "summary.json").write_text(json.dumps({"status": "running", "global_step": 4}))
    steps = [lambda: record_failure(run / "sft", "worker died", 1.0),
             lambda: mark_stopped(run / "sft", "stopped early by the asha scheduler at step 4")]
    for step in steps if failure_first else steps[::-1]:
        step()
    summary = read_summary(run / "sft")
    assert summary["status"] == "stopped" and "asha" in summary["error"] and summary["global_step"] == 4
    assert json.loads((run / "sft" / "summary.json").read_text())["status"] == "stopped"
    assert run_state(run).status == "stopped"


def test_runs_and_sweeps_are_read_only_under_the_storage_path(backend, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.yaml").write_text("stages: []\n")
    (outside / "results.json").write_text('{"trials": []}')
    for name in ("../outside", "/etc", "nothing"):
        with pytest.raises(UserError, match="no such"):
            backend.run(name)
        with pytest.raises(UserError, match="no such sweep"):
            backend.sweep(name)


def test_a_cluster_without_a_job_agent_is_explained():
    """What Ray's Jobs API answers when a second local Ray could not start its agent (seen when the
    UI started its own Ray beside the test session's): the message says why and what to do."""
    from types import SimpleNamespace

    from rayft.cluster.submit import JobClient

    raw = Exception("Request failed with status code 500: No available agent to submit job, please try again later..")
    message = JobClient._explain(SimpleNamespace(address="http://127.0.0.1:8266"), raw)
    assert "no job agent" in message and "ray start --head" in message and "--address auto" in message


def test_models_are_builtins_or_folders_inside_the_page_s_folders(backend, tmp_path):
    data = backend.data_dirs[0] / "rows.jsonl"
    inside = backend.storage / "merged-model"
    inside.mkdir(parents=True)
    outside = tmp_path / "elsewhere-model"
    outside.mkdir()
    for name, words in [("builtin:tiny-random", None), (str(inside), None),
                        (str(outside), "outside the folders"), ("HuggingFaceTB/SmolLM2-135M", "no model hub")]:
        loaded, problem = check(f"model: {{name: '{name}'}}\ndata: {{path: {data}}}\n", backend)
        if words is None:
            assert problem is None, problem
        else:
            assert loaded is None and problem.startswith("model.name:") and words in problem, problem


def test_curves_are_read_while_the_run_writes_and_unchanged_files_only_once(tmp_path):
    """rayft.records.listing.curves reads TensorBoard event files as they grow (the page asks every 2 s); an
    event file that has not changed is not parsed again."""
    from torch.utils.tensorboard import SummaryWriter

    from rayft.records.listing import _event_scalars, curves

    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    for step in (1, 2, 3):
        writer.add_scalar("train/loss", 1.0 / step, step)
    writer.flush()
    assert [s for s, _ in curves(tmp_path)["train/loss"]] == [1, 2, 3]
    misses = _event_scalars.cache_info().misses
    assert curves(tmp_path)["train/loss"][-1] == (3, pytest.approx(1 / 3))
    assert _event_scalars.cache_info().misses == misses, "the unchanged file was parsed again"
    writer.add_scalar("train/loss", 0.1, 4)
    writer.add_scalar("eval/loss", 0.2, 4)
    writer.flush()
    found = curves(tmp_path)
    assert found["train/loss"][-1] == (4, pytest.approx(0.1)) and found["eval/loss"] == [(4, pytest.approx(0.2))]
    writer.close()
