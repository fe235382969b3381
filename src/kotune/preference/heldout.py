"""Held-out figures of the preference stages, measured by kotune itself before and after training.

Every stage measures the same figures the same way whatever trains it (TRL's DPO, KTO, ORPO and SimPO each log
different `eval_*` metrics, and ours would otherwise not be comparable across loss types):

- reward model: pairwise accuracy (chosen scores higher) and margin, from the reward head;
- DPO family: preference accuracy (the policy's summed log-probability of the chosen reply is higher than the
  rejected one's), the margin of the two sums and the chosen reply's sum. "Before" is the model the stage starts
  from: for DPO and KTO that is the reference itself (frozen copy, or the adapter disabled), so the before-figure
  is the reference's own accuracy, the one training must beat;
- PPO/RLOO/GRPO: the trained reward model's mean score of replies sampled with a fixed seed on held-out prompts,
  and the summed log-ratio to the reference on those replies (a Monte Carlo estimate of the KL).

Each figure is a mean of per-example values with a seeded 95% bootstrap interval, and before/after are compared on
the same examples by the paired difference (`kotune.common.stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch

from kotune.common.stats import mean_interval, paired_difference_interval
from kotune.preference.rollout import build_batch, sample_replies, token_logprobs
from kotune.preference.scoring import pad_right, score_sequences


def compare(before: dict[str, Sequence[float]], after: dict[str, Sequence[float]], *, before_is: str,
            seed: int = 0) -> dict:
    """Per figure: before and after with their intervals, and the paired difference (`changed` False when its
    interval contains 0). `before_is` names the model measured before (the report prints it)."""
    figures = {}
    for name, old in before.items():
        new = after[name]
        figures[name] = {"before": mean_interval(old, seed), "after": mean_interval(new, seed),
                         "difference": paired_difference_interval(new, old, seed)}
    examples = len(next(iter(before.values()))) if before else 0
    return {"examples": examples, "before_is": before_is, "figures": figures,
            "changed": any(f["difference"]["changed"] for f in figures.values())}


@torch.no_grad()
def reply_logprobs(model, prompts: list[list[int]], replies: list[list[int]], pad_id: int,
                   batch_size: int = 8) -> torch.Tensor:
    """sum over reply tokens of log p(token | everything before it), one float32 per (prompt, reply), on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(prompts), batch_size):
        ps, rs = prompts[start : start + batch_size], replies[start : start + batch_size]
        ids, attention = pad_right([p + r for p, r in zip(ps, rs)], pad_id, device)
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
        logp = torch.gather(logits.log_softmax(-1), 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        mask = torch.zeros_like(logp)
        for row, (p, r) in enumerate(zip(ps, rs)):  # token j is predicted at position j - 1
            mask[row, len(p) - 1 : len(p) + len(r) - 1] = 1
        out.append((logp * mask).sum(1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def preference_values(model, pairs, pad_id: int) -> dict[str, list[float]]:
    """Per held-out pair, from a policy: correct (0/1), margin and chosen log-probability (sums over the reply)."""
    prompts = [p.prompt_ids for p in pairs]
    chosen = reply_logprobs(model, prompts, [p.chosen_ids for p in pairs], pad_id)
    rejected = reply_logprobs(model, prompts, [p.rejected_ids for p in pairs], pad_id)
    return {"accuracy": (chosen > rejected).float().tolist(), "margin": (chosen - rejected).tolist(),
            "chosen_logprob": chosen.tolist()}


def reward_values(model, pairs, pad_id: int) -> dict[str, list[float]]:
    """Per held-out pair, from a reward model: correct (0/1) and the margin of the two scores."""
    chosen = score_sequences(model, [p.chosen_sequence for p in pairs], pad_id)
    rejected = score_sequences(model, [p.rejected_sequence for p in pairs], pad_id)
    return {"accuracy": (chosen > rejected).float().tolist(), "margin": (chosen - rejected).tolist()}


@torch.no_grad()
def rollout_values(actor, reference: Callable | None, reward, prompts: list[list[int]], gen, tokenizer, *,
                   seed: int, batch_size: int = 16, autocast=nullcontext) -> dict[str, list[float]]:
    """Per held-out prompt: the reward model's score of a reply sampled from `actor` with a fixed seed (the same
    replies on every rerun), and the reply's summed log-ratio log pi_actor - log pi_ref (the KL estimate PPO logs).

    Args:
        reference: `reference(batch)` -> the reference's token log-probabilities on `batch`; None: no KL.
    """
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    device = next(actor.parameters()).device
    rewards, kls = [], []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed + start)
            with autocast():
                replies = sample_replies(actor, chunk, gen, pad_id, eos_id)
        batch = build_batch(chunk, replies, pad_id, eos_id, device)
        rewards += score_sequences(reward, batch.sequences, reward.config.pad_token_id).tolist()
        if reference is not None:
            with autocast():
                logp = token_logprobs(actor, batch.input_ids, batch.attention_mask, batch.start, gen.temperature)
                ref = reference(batch)
            kls += ((logp - ref) * batch.mask).sum(1).float().cpu().tolist()
    return {"reward": rewards, "kl": kls} if reference is not None else {"reward": rewards}


def summary_line(heldout: dict) -> str:
    """One log line: each figure before -> after, and whether anything changed measurably."""
    parts = [f"{name} {f['before']['value']:.3f} -> {f['after']['value']:.3f} (difference {f['difference']['value']:+.3f}, "
             f"95% [{f['difference']['low']:+.3f}, {f['difference']['high']:+.3f}])"
             for name, f in heldout["figures"].items()]
    verdict = "" if heldout["changed"] else "; no measurable change"
    return f"held-out ({heldout['examples']} examples): " + ", ".join(parts) + verdict
