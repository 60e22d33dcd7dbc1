"""`rayft submit` before any cluster is involved: the token's sources and precedence, and the
checks that fail fast (bad config, config outside the working dir, missing address or id).
The submissions themselves run against a real Ray head in test_submit_ray.py."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from rayft.cli import main
from rayft.cluster.submit import SubmitError, find_token, train_entrypoint

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens there; the checks must fail before connecting


@pytest.fixture
def no_token_env(monkeypatch, tmp_path):
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_token_sources_in_rays_order(no_token_env, monkeypatch):
    tmp = no_token_env
    assert find_token() is None
    default = tmp / "home" / ".ray" / "auth_token"
    default.parent.mkdir(parents=True)
    default.write_text("from-home\n")
    assert find_token() == "from-home"
    path_file = tmp / "path_token"
    path_file.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_file))
    assert find_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_token() == "from-env"
    explicit = tmp / "explicit"
    explicit.write_text("  from-flag \n")
    assert find_token(str(explicit)) == "from-flag"
    (tmp / "empty").write_text("\n")
    with pytest.raises(SubmitError, match="is empty"):
        find_token(str(tmp / "empty"))
    with pytest.raises(SubmitError, match="cannot read the token file"):
        find_token(str(tmp / "absent"))


def test_entrypoint_is_the_config_relative_to_the_working_dir_with_overrides():
    entry = train_entrypoint(REPO / "jobs" / "configs" / "sft_tiny.yaml", REPO,
                             ["training.lr=1e-4", "run_name=my run"])
    assert shlex.split(entry) == ["python", "-m", "rayft", "train", "jobs/configs/sft_tiny.yaml",
                                  "--set", "training.lr=1e-4", "--set", "run_name=my run"]


def test_bad_config_fails_before_connecting(no_token_env, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["submit", "jobs/configs/sft_tiny.yaml", "--address", UNREACHABLE,
                 "--set", "training.lrr=1"]) == 2
    assert "training.lrr: unknown key; did you mean 'lr'?" in capsys.readouterr().err


def test_config_outside_the_working_dir_is_refused(no_token_env, monkeypatch, tmp_path, capsys):
    outside = tmp_path / "c.yaml"
    outside.write_text("data: {path: d.jsonl}\n")
    monkeypatch.chdir(REPO)
    assert main(["submit", str(outside), "--address", UNREACHABLE]) == 2
    assert "must be inside the uploaded working directory" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["submit", "jobs/configs/sft_tiny.yaml"], "--address: give the head's dashboard URL"),
    (["submit", "--address", UNREACHABLE], "give a CONFIG to submit, or one of --status"),
    (["submit", "jobs/configs/sft_tiny.yaml", "--status", "x", "--address", UNREACHABLE], "not both"),
    (["submit", "--status", "x", "--address", UNREACHABLE], "cannot reach the Ray Jobs API"),
])
def test_usage_errors_exit_2_with_a_message(args, message, no_token_env, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
