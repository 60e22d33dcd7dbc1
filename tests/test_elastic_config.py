"""Elastic worker ranges in the config (`scaling.num_workers: 2-4`, `{min, max}`, `min_workers`): the
forms agree, and what cannot keep the global batch or reshard its checkpoint is refused, naming
the field and what would work. The gradient accumulation a worker count gets keeps the batch."""

from __future__ import annotations

import pytest

from rayft.compute.training_args import elastic_grad_accum
from rayft.config.load import load_pipeline
from rayft.core.errors import ConfigError


@pytest.mark.parametrize("form", ["scaling.num_workers=2-4", "scaling.num_workers={min: 2, max: 4}",
                                  "scaling.min_workers=2"])
def test_the_three_forms_say_the_same(form):
    extra = ["scaling.num_workers=4"] if form.startswith("scaling.min_workers") else []
    scaling = load_pipeline(None, [*extra, form, "training.grad_accum=3"]).pipeline.scaling
    assert (scaling.min_workers, scaling.num_workers, scaling.elastic, scaling.fewest_workers()) == (2, 4, True, 2)


def test_a_fixed_count_is_not_elastic():
    scaling = load_pipeline(None, ["scaling.num_workers=3"]).pipeline.scaling
    assert not scaling.elastic and scaling.fewest_workers() == 3
    assert not load_pipeline(None, ["scaling.num_workers=2-2"]).pipeline.scaling.elastic


@pytest.mark.parametrize("overrides, message", [
    (["scaling.num_workers=2-4"], r"on 3 worker\(s\) .*set training.grad_accum to 3"),
    (["scaling.num_workers=4-2"], "min_workers: 4 is more than num_workers"),
    (["scaling.num_workers=two-four"], "not a worker range"),
    (["scaling.num_workers=2-4", "scaling.min_workers=1"], "a range already says min_workers"),
    (["scaling.num_workers=1-2", "training.strategy=deepspeed"], "training.strategy is deepspeed: .*need strategy ddp"),
    (["scaling.num_workers=1-2", "training.max_steps=4", "stages=[{type: ppo, rewards: ['rayft.rewards:letter_share']}]"],
     "stage 'ppo' \\(ppo\\) .*fixed worker count"),
])
def test_what_cannot_hold_is_refused_naming_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline(None, overrides)


@pytest.mark.parametrize("workers, expected", [(4, 3), (3, 4), (2, 6)])
def test_the_global_batch_is_kept_by_accumulation(workers, expected):
    assert elastic_grad_accum(3, 4, workers) == expected  # 3 x 4 = 12 micro-batches per optimizer step
    assert elastic_grad_accum(3, 4, workers) * workers == 12
