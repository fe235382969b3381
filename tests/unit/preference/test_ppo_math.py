"""PPO arithmetic without models: rewards, GAE, clipped losses, and the first-step guards on the seed's numbers."""

import pytest
import torch

from kotune.preference import ppo_math as pm

# Two rows; row 0's reply covers positions 1..3, row 1's positions 2..3 (position 0 is prompt, 4 is padding).
MASK = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 0]], dtype=torch.float)


def test_token_rewards_penalise_kl_per_token_and_add_the_score_at_the_last_reply_token():
    logp = torch.tensor([[0.0, -1.0, -2.0, -1.0, 0.0], [0.0, 0.0, -1.0, -1.0, 0.0]])
    ref = torch.tensor([[5.0, -1.5, -2.0, -3.0, 9.0], [0.0, 0.0, -1.0, -2.0, 0.0]])
    rewards, kl = pm.token_rewards(torch.tensor([10.0, 20.0]), logp, ref, MASK, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0, 0.5, 0, 2, 0], [0, 0, 0, 1, 0]]))  # zero outside the reply
    assert torch.allclose(rewards, torch.tensor([[0, -0.05, 0, 10 - 0.2, 0], [0, 0, 0, 20 - 0.1, 0]]))


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value_per_row():
    rewards = torch.tensor([[9.0, 1.0, 2.0, 3.0, 7.0], [9.0, 9.0, 1.0, 5.0, 7.0]])
    values = torch.tensor([[4.0, 0.5, 1.0, 1.5, 8.0], [4.0, 4.0, 2.0, 2.0, 8.0]])
    adv, ret = pm.gae(rewards * MASK, values * MASK, MASK, gamma=1.0, lam=1.0)
    # The state after each row's last reply token is terminal: padding and prompt rewards never leak in.
    assert torch.allclose(adv, torch.tensor([[0, 6 - 0.5, 5 - 1.0, 3 - 1.5, 0], [0, 0, 6 - 2.0, 5 - 2.0, 0]]))
    assert torch.allclose(ret, torch.tensor([[0, 6.0, 5.0, 3.0, 0], [0, 0, 6.0, 5.0, 0]]))


def test_gae_with_lambda_zero_is_the_one_step_td_error():
    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0, 0.0]])
    values = torch.tensor([[0.0, 0.5, 1.5, 1.0, 0.0]])
    mask = MASK[:1]
    adv, _ = pm.gae(rewards, values, mask, gamma=0.9, lam=0.0)
    assert torch.allclose(adv, torch.tensor([[0, 1 + 0.9 * 1.5 - 0.5, 0 + 0.9 * 1.0 - 1.5, 2 - 1.0, 0]]))


def test_policy_loss_clips_the_ratio_in_the_direction_of_the_advantage():
    old = torch.zeros(1, 5)
    adv = torch.tensor([[0.0, 1.0, -1.0, 1.0, 0.0]])
    new = torch.tensor([[0.0, 0.5, -0.5, 0.0, 0.0]], requires_grad=True)  # ratios e^0.5, e^-0.5, 1
    loss, stats = pm.policy_loss(new, old, adv, MASK[:1], cliprange=0.2)
    loss.backward()
    # Positive advantage with ratio > 1.2 and negative advantage with ratio < 0.8 are clipped: no gradient.
    assert new.grad[0, 1] == 0 and new.grad[0, 2] == 0 and new.grad[0, 3] < 0
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.0) / 3)
    assert stats["clipfrac"] == pytest.approx(2 / 3)


def test_value_loss_is_clipped_around_the_rollout_values():
    old = torch.zeros(1, 5)
    returns = torch.full((1, 5), 1.0)
    values = torch.tensor([[0.0, 0.1, 0.5, 2.0, 0.0]], requires_grad=True)
    loss, _ = pm.value_loss(values, old, returns, MASK[:1], cliprange_value=0.2)
    # max of unclipped and clipped squared errors: (0.2-1)^2 for 0.1 and 0.5 (clipped to 0.2), (2-1)^2 vs (0.2-1)^2
    assert loss.item() == pytest.approx(0.5 * (0.81 + 0.64 + 1.0) / 3)


def test_masked_whiten_normalises_only_the_reply():
    x = torch.tensor([[100.0, 1.0, 2.0, 3.0, -50.0], [7.0, 7.0, 4.0, 6.0, 7.0]])
    w = pm.masked_whiten(x, MASK)
    assert float(pm.masked_mean(w, MASK)) == pytest.approx(0, abs=1e-6)
    assert float(pm.masked_mean(w**2, MASK)) == pytest.approx(1, abs=1e-4)
    assert float(w[0, 0]) == 0 and float(w[0, 4]) == 0


def test_first_step_guard_fires_on_the_seeds_numbers_reward_equal_to_value():
    # chatKoAlpaca: the reward model was a copy of the critic, so its score equals the value everywhere.
    scores = torch.tensor([0.3, -0.7])
    values = scores[:, None] * MASK
    rewards, kl = pm.token_rewards(scores, torch.zeros(2, 5), torch.zeros(2, 5), MASK, 0.1)  # reference == actor
    adv, _ = pm.gae(rewards, values, MASK, 1.0, 1.0)
    with pytest.raises(pm.PPOSetupError, match="rewards are identical to values.*copy of the critic"):
        pm.check_first_step(scores, values, adv, MASK, kl)


def test_first_step_guard_fires_when_every_advantage_is_zero():
    scores = torch.tensor([1.0, 1.0])
    values = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 0]], dtype=torch.float)
    values[0, 1] = 1.0 + 1e-3  # not identical to the reward ...
    rewards = torch.tensor([[0, 1e-3, 0, 1, 0], [0, 0, 0, 1, 0]])  # ... but every TD error is still 0
    adv, _ = pm.gae(rewards, values, MASK, 1.0, 1.0)
    with pytest.raises(pm.PPOSetupError, match="advantages are all zero"):
        pm.check_first_step(scores, values, adv, MASK, torch.zeros(2, 5))


def test_first_step_guard_passes_a_working_setup_and_gradient_guard_needs_a_gradient():
    scores = torch.tensor([1.0, -1.0])
    values = torch.tensor([[0, 0.1, 0.2, 0.3, 0], [0, 0, -0.2, 0.1, 0]])
    rewards, kl = pm.token_rewards(scores, torch.zeros(2, 5), torch.zeros(2, 5), MASK, 0.1)
    adv, _ = pm.gae(rewards, values, MASK, 1.0, 0.95)
    pm.check_first_step(scores, values, adv, MASK, kl)
    pm.check_policy_gradient(0.5)
    for bad in (0.0, float("nan")):
        with pytest.raises(pm.PPOSetupError, match="policy gradient norm"):
            pm.check_policy_gradient(bad)
