"""Losses as small pure functions, tested without a trainer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """`labels` shifted left by one (position t holds the token position t predicts), IGNORE_INDEX at the end."""
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets


def causal_lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled positions, and how many there are.

    Returning the sum (not the mean) lets a trainer divide by the trained tokens of the whole global batch, so
    the loss is the same however the batch is split into micro-batches or processes.
    """
    # Shift the labels, not the logits: slicing the logits would copy the largest tensor of the step.
    targets = next_token_targets(labels)
    flat = logits.reshape(-1, logits.size(-1))
    loss = F.cross_entropy(flat.float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).sum())
