"""PPO's arithmetic as small pure functions on `[batch, positions]` tensors, tested without models.

Layout: position `i` of a row is the prediction of token `i + 1` of the right-padded sequence, so `logprobs[:, i]`
is log pi(token i+1 | tokens <= i) and `values[:, i]` is the critic's value of the state before token i+1. `mask`
is 1 where token i+1 is a reply token. Replies are contiguous, so each row's reply is one run of ones.
"""

from __future__ import annotations

import torch


class PPOSetupError(ValueError):
    """PPO cannot learn with this set-up (chatKoAlpaca's failure); the message says which check failed and why.

    A ValueError, so `kotune ppo` prints the message instead of a traceback, as for other set-up errors."""


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (masked-out entries become 0)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * KL at every reply token, plus the sequence score at the last reply token.

    The KL estimate is log pi - log pi_ref of the sampled token (InstructGPT, TRL's PPO `kl_estimator="k1"`).

    Returns:
        (rewards, kl), both `[batch, positions]` and zero outside the reply.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = last_positions(mask)
    rewards[torch.arange(rewards.size(0)), last] += scores
    return rewards, kl


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last reply position (rows must have at least one)."""
    idx = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), idx, torch.full_like(idx, -1)).max(dim=1).values


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over each row's reply; the state after the last reply token is terminal.

    Returns:
        (advantages, returns), zero outside the reply; returns = advantages + values.
    """
    n = rewards.size(1)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for i in reversed(range(n)):
        next_mask = mask[:, i + 1] if i + 1 < n else torch.zeros_like(mask[:, 0])
        next_value = values[:, i + 1] * next_mask if i + 1 < n else torch.zeros_like(values[:, 0])
        delta = rewards[:, i] + gamma * next_value - values[:, i]
        running = delta + gamma * lam * running * next_mask
        advantages[:, i] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate objective (to minimise), and its clip fraction and approximate KL to the rollout policy."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": float(masked_mean((clipped > unclipped).float(), mask)),
                 "approx_kl": float(masked_mean(0.5 * log_ratio**2, mask))}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, dict]:
    """Clipped value loss: 0.5 * max((v - R)^2, (v_clipped - R)^2), v_clipped within cliprange_value of the rollout."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
    with torch.no_grad():
        stats = {"value_clipfrac": float(masked_mean(((clipped - returns) ** 2 > (values - returns) ** 2).float(), mask))}
    return loss, stats


def check_first_step(scores: torch.Tensor, values: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                     kl: torch.Tensor) -> None:
    """The checks chatKoAlpaca's run would have failed, on the first rollout batch (before any update).

    Raises:
        PPOSetupError: rewards identical to values, or advantages all zero; the message says why it happens.
    """
    m = mask.bool()
    per_row = scores[:, None].expand_as(values)
    tol = 1e-6 * max(1.0, float(scores.abs().max()))
    if bool(((values - per_row).abs()[m] <= tol).all()):
        if int(mask.sum(1).max()) <= 1:
            raise PPOSetupError(
                "rewards are identical to values because every sampled reply is EOS alone: the reward model scores the "
                "prompt, which the critic (initialised from it) already values exactly, so every advantage is 0. "
                "The actor ends every reply at once: check the model is the SFT model and its chat template."
            )
        raise PPOSetupError(
            "rewards are identical to values: at every reply token the critic's value equals the reward model's score "
            f"(e.g. {float(scores[0]):.4g}), so reward - value = 0 and every advantage is 0. The reward model and the "
            "critic compute the same function, as in chatKoAlpaca, where the reward model was a copy of the "
            "critic. Use the trained reward model (reward_model: the folder `kotune reward` wrote) as the reward, "
            "and a separate critic."
        )
    if float(advantages[m].abs().max()) <= 1e-8:
        raise PPOSetupError(
            "advantages are all zero at the first step: the critic already predicts every return exactly "
            f"(score mean {float(scores.mean()):.4g}, KL sum {float(kl.sum()):.4g}), so the policy gradient is 0. "
            "Check that the reward model is the trained one and differs from the critic, and that kl_coef is sane."
        )


def check_policy_gradient(grad_norm: float) -> None:
    """Raises PPOSetupError when the first policy update has no gradient."""
    if not grad_norm > 0 or grad_norm != grad_norm or grad_norm == float("inf"):
        raise PPOSetupError(
            f"the policy gradient norm is {grad_norm} at the first step, so the actor cannot move. Its parameters are "
            "frozen (requires_grad is False, e.g. a LoRA adapter loaded with is_trainable=False) or the advantages "
            "are zero. Train from the SFT folder with method: full or lora, which makes the right weights trainable."
        )
