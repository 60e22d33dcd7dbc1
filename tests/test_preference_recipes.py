"""The preference stages' recipe choices (issue: alignment that pays): RPO's SFT term and LD-DPO's
length weighting reach TRL's DPOConfig as TRL names them, bad values name their field, and the
chosen / rejected log-probs TRL logs per step reach summary.json and a plot."""

from __future__ import annotations

import pytest

from rayft.config.load import load_pipeline
from rayft.core.errors import ConfigError


def _dpo(*sets: str):
    return load_pipeline(None, ["model.name=builtin:tiny-random", "data.path=pairs.jsonl",
                              "stages=[{type: dpo}]", *sets]).pipeline.stages[0]


def test_rpo_adds_a_weighted_sft_term_and_trl_accepts_it(tmp_path):
    from trl import DPOConfig

    from rayft.stages.dpo import dpo_loss_kwargs

    plain = dpo_loss_kwargs(_dpo())
    assert plain["loss_type"] == ["sigmoid"] and plain["loss_weights"] is None and plain["ld_alpha"] is None
    rpo = dpo_loss_kwargs(_dpo("stages.0.rpo_alpha=0.5", "stages.0.loss_type=ipo", "stages.0.ld_alpha=0.3"))
    assert rpo["loss_type"] == ["ipo", "sft"] and rpo["loss_weights"] == [1.0, 0.5] and rpo["ld_alpha"] == 0.3
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **rpo)  # TRL validates the combination
    assert args.loss_type == ["ipo", "sft"] and args.loss_weights == [1.0, 0.5]


@pytest.mark.parametrize("field,value,message", [("rpo_alpha", "-1", "greater than 0"),
                                                 ("ld_alpha", "1.5", "less than or equal to 1")])
def test_bad_recipe_values_name_their_field(field, value, message):
    with pytest.raises(ConfigError, match=rf"stages\.0\.{field}.*{message}|{field}.*{message}"):
        _dpo(f"stages.0.{field}={value}")


def test_preference_log_probs_per_step_reach_the_summary_and_a_plot(tmp_path):
    from types import SimpleNamespace

    from rayft.records.plots import plot_training
    from rayft.records.progress import ProgressCallback

    callback = ProgressCallback("dpo", 0.0)
    for step, chosen in ((1, -40.0), (2, -38.5), (3, -41.0)):
        state = SimpleNamespace(global_step=step, max_steps=3, is_world_process_zero=True)
        callback.on_log(None, state, None, logs={"loss": 0.69, "logps/chosen": chosen, "logps/rejected": chosen - step,
                                                 "rewards/margins": 0.1 * step, "rewards/accuracies": 0.5})
    callback.on_log(None, SimpleNamespace(global_step=3, max_steps=3, is_world_process_zero=True), None,
                    logs={"eval_loss": 0.6, "eval_logps/chosen": -39.0})  # eval logs are not per-step history
    history = callback.figures(1.0)["preference_history"]
    assert [h["step"] for h in history] == [1, 2, 3]
    assert history[2] == {"step": 3, "logps_chosen": -41.0, "logps_rejected": -44.0, "margin": pytest.approx(0.3),
                          "accuracy": 0.5}
    assert "preference_history" not in ProgressCallback("sft", 0.0).figures(1.0)
    plots = {p.name for p in plot_training(callback.figures(1.0), tmp_path)}
    assert "logps.png" in plots and (tmp_path / "logps.png").stat().st_size > 5000
