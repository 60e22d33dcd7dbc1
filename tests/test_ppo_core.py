"""PPO math on hand-checked inputs."""

from __future__ import annotations

import pytest
import torch

from rayft.rl import ppo_core as core


def test_gae_matches_the_recursion_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last position is padding: its value is ignored
    gamma, lam = 0.9, 0.8
    adv, ret = core.gae(rewards, values, mask, gamma, lam)
    d2 = 1.0 - 0.3
    d1 = 0.0 + gamma * 0.3 - 0.4
    d0 = 0.0 + gamma * 0.4 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 0.4, a2 + 0.3, 0.0]]))


def test_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = core.masked_whiten(x, mask)
    assert w[0, 3] == 0
    assert core.masked_mean(w, mask).abs() < 1e-6
    assert core.masked_mean(w ** 2, mask) == pytest.approx(1.0, rel=1e-4)


def test_kl_shaped_rewards_put_the_score_on_the_last_real_token():
    scores = torch.tensor([2.0, -1.0])
    logp = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards, kl = core.kl_shaped_rewards(scores, logp, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 2.0], [-1.0, 0.0, 0.0]]))


def test_policy_loss_clips_and_counts():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, 1.0]])
    mask = torch.ones(1, 2)
    loss, clipfrac = core.policy_loss(new, old, adv, mask, clip=0.2)
    # token 0: min(1.5, 1.2) * 1 -> 1.2 (clipped); token 1: min(0.5, 0.8) -> 0.5 (not clipped)
    assert loss.item() == pytest.approx(-(1.2 + 0.5) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_value_loss_takes_the_worse_of_clipped_and_raw():
    values = torch.tensor([[2.0]])
    old = torch.tensor([[0.0]])
    returns = torch.tensor([[1.0]])
    # raw error (2-1)^2 = 1; clipped prediction 0.2 -> (0.2-1)^2 = 0.64; max = 1 -> 0.5
    assert core.value_loss(values, old, returns, torch.ones(1, 1), clip=0.2).item() == pytest.approx(0.5)


def test_token_logprobs_and_entropy():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert core.token_logprobs(logits, torch.tensor([[0]])).item() == pytest.approx(torch.log(torch.tensor(0.5)).item())
    expected = -(0.5 * torch.log(torch.tensor(0.5)) + 0.5 * torch.log(torch.tensor(0.25)))
    assert core.entropy(logits).item() == pytest.approx(expected.item(), rel=1e-5)


def test_adaptive_kl_controller_follows_ziegler_et_al():
    """beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon."""
    assert core.adaptive_kl_coef(0.1, 6.0, 6.0, 8, 10000) == pytest.approx(0.1)  # on target: unchanged
    assert core.adaptive_kl_coef(0.1, 6.6, 6.0, 8, 80) == pytest.approx(0.1 * (1 + 0.1 * 0.1))
    assert core.adaptive_kl_coef(0.1, 60.0, 6.0, 8, 80) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # clipped up
    assert core.adaptive_kl_coef(0.1, 0.0, 6.0, 8, 80) == pytest.approx(0.1 * (1 - 0.2 * 0.1))  # clipped down
    assert core.adaptive_kl_coef(0.1, 12.0, 6.0, 100, 100) == pytest.approx(0.12)  # a whole horizon: +20%
