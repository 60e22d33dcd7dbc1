"""A real 2-worker Ray Train SFT run on the tiny model: loss goes down, outputs follow the run
directory contract, the adapter reloads with PEFT, and a named re-run skips the finished stage."""

from __future__ import annotations

import json

import pytest

from conftest import DEMO_DATA
from rayft.config.load import load_pipeline

pytestmark = pytest.mark.ray

OVERRIDES = ["model.name=builtin:tiny-random", f"data.path={DEMO_DATA}", "data.template=alpaca",
             "data.max_length=160", "data.eval_split=16", "training.max_steps=12", "training.batch_size=4",
             "training.lr=3e-3", "training.logging_steps=2", "scaling.num_workers=2", "run_name=t1"]


@pytest.fixture(scope="module")
def sft_run(ray_cluster, tmp_path_factory):
    """The demo data plus a file with two broken lines, skipped (data.on_error: skip) and counted."""
    from rayft.train.launch import run_pipeline

    storage = tmp_path_factory.mktemp("runs")
    broken = storage / "broken.jsonl"
    broken.write_text('{"instruction": "Say hi", "output": "hi"}\n{"instruction": "x"}\n{oops\n')
    loaded = load_pipeline(None, [*OVERRIDES, f"storage.path={storage}", "data.on_error=skip",
                                f"tracking.mlflow.tracking_uri=file://{storage}/mlruns",
                                "tracking.wandb.project=rayft-test", "tracking.wandb.mode=offline",
                                "tracking.wandb.tags=[ci]",
                                f"data.path=[{DEMO_DATA}, {broken}]"])
    return loaded, run_pipeline(loaded)


def test_two_workers_train_and_loss_goes_down(sft_run):
    _, result = sft_run
    summary = json.loads((result.run_dir / "sft" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 12
    assert summary["num_workers"] == 2
    assert summary["data"]["skipped_bad_rows"] == {"count": 2, "by_reason": {"invalid JSON": 1, "missing field": 1}}
    skipped = (result.run_dir / "sft" / "data" / "skipped_rows.jsonl").read_text().splitlines()
    assert len(skipped) == 2 and "broken.jsonl:2" in skipped[1] + skipped[0]
    losses = [loss for _, loss in summary["loss_history"]]
    assert len(losses) >= 5
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, f"loss did not go down: {losses}"
    assert summary["eval_loss"] is not None and summary["tokens_per_s"] > 0
    assert summary["time_to_first_step_s"] > 0 and summary["wall_s"] > 0
    assert {"ray", "torch", "transformers", "peft", "trl"} <= set(summary["versions"])
    assert (result.run_dir / "sft" / "plots" / "loss.png").stat().st_size > 1000
    assert (result.run_dir / "sft" / "plots" / "lr.png").stat().st_size > 1000
    assert list((result.run_dir / "sft" / "tensorboard").glob("events.out.tfevents.*"))


def test_resolved_config_saved(sft_run):
    loaded, result = sft_run
    import yaml

    saved = yaml.safe_load((result.run_dir / "sft" / "config.yaml").read_text())
    assert saved["training"]["max_steps"] == 12 and saved["model"]["name"] == "builtin:tiny-random"
    assert saved["adapter"]["r"] == loaded.pipeline.adapter.r  # defaults are written out too


def test_adapter_reloads_with_peft(sft_run, tiny_model_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, result = sft_run
    adapter = result.run_dir / "sft" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), str(adapter))
    trained = load_file(str(adapter / "adapter_model.safetensors"))
    assert trained, "the adapter has weights"
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero; training must move it"
    out = model(torch.tensor([[1, 2, 3]]))
    assert out.logits.shape[-1] == model.config.vocab_size
    assert not list(result.run_dir.glob("sft/.adapter.partial-*")), "no half-written adapter is left"


def test_named_rerun_skips_completed_stage(sft_run, capsys):
    from rayft.train.launch import run_pipeline

    loaded, result = sft_run
    before = (result.run_dir / "sft" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    again = run_pipeline(loaded)
    assert "already completed, skipping" in capsys.readouterr().out
    assert again.run_dir == result.run_dir
    assert (result.run_dir / "sft" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == before


def test_stage_failure_is_recorded(ray_cluster, tmp_path):
    """A worker-side user error (a LoRA target the model lacks) fails the stage with its message
    in summary.json, instead of a traceback."""
    from rayft.train.launch import StageFailed, run_pipeline

    loaded = load_pipeline(None, [*OVERRIDES, f"storage.path={tmp_path}", "run_name=bad",
                                "adapter.target_modules=[no_such_proj]"])
    with pytest.raises(StageFailed, match="no_such_proj"):
        run_pipeline(loaded)
    summary = json.loads((tmp_path / "bad" / "sft" / "summary.json").read_text())
    assert summary["status"] == "failed" and "no_such_proj" in summary["error"]


def test_mlflow_gets_params_and_per_step_metrics(sft_run):
    """tracking.mlflow: rank 0 logs one MLflow run per stage into the (local file) store."""
    import os

    import mlflow

    loaded, result = sft_run
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 refuses a file store unless asked
    client = mlflow.tracking.MlflowClient(loaded.pipeline.tracking.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name("rayft")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == ["t1/sft"]  # one run, not one per worker
    run = runs[0]
    assert run.data.tags["rayft.stage"] == "sft" and float(run.data.params["learning_rate"]) == 3e-3
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert len(losses) >= 5 and max(m.step for m in losses) == 12


def test_wandb_offline_run_holds_the_stage_s_scalars(sft_run):
    """tracking.wandb (offline): rank 0 writes one W&B run per stage under <stage>/wandb/, read back
    with wandb's own reader: named and grouped after the run, the per-step loss as in summary.json."""
    from wandb_reader import read_offline_run

    _, result = sft_run
    run = read_offline_run(result.run_dir / "sft")  # one run, not one per worker
    assert run["name"] == "t1/sft" and run["group"] == "t1" and run["project"] == "rayft-test"
    losses = {row["train/global_step"]: row["train/loss"] for row in run["history"] if "train/loss" in row}
    summary = json.loads((result.run_dir / "sft" / "summary.json").read_text())
    assert losses and {step: round(loss, 4) for step, loss in summary["loss_history"]} == \
        {step: round(loss, 4) for step, loss in losses.items()}
    assert any("eval/loss" in row for row in run["history"])


def test_wandb_online_without_a_key_is_refused_before_any_stage(tmp_path, monkeypatch):
    from rayft.core.errors import ConfigError
    from rayft.train.launch import run_pipeline

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    loaded = load_pipeline(None, [*OVERRIDES, f"storage.path={tmp_path}", "tracking.wandb.project=p"])
    with pytest.raises(ConfigError, match="tracking.wandb.mode: online needs WANDB_API_KEY"):
        run_pipeline(loaded)
    assert not (tmp_path / "t1" / "sft").exists()
