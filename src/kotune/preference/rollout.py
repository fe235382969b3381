"""Rollouts for PPO: sample replies, then lay prompt + reply out as right-padded rows for every scoring forward.

Generation runs on left-padded prompts (transformers builds position ids from the attention mask). Every
later forward (actor, reference, critic, reward model) sees the same sequences right-padded, with positions from
0, which is how the reward model was trained and how `AutoModelForSequenceClassification` reads its score. The
`[batch, positions]` layout is described in `ppo_math`; positions start at `start` = the shortest prompt - 1, so
prompt tokens no reply depends on are not pushed through the LM head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kotune.preference.models import backbone


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] prompt + reply, right-padded
    attention_mask: torch.Tensor  # [B, L]
    mask: torch.Tensor  # [B, L - 1 - start] float: 1 where the predicted token is a reply token
    start: int  # first position whose prediction is kept
    sequences: list[list[int]]  # unpadded prompt + reply, for the reward model
    ended: torch.Tensor  # [B] bool: the reply ends with EOS (not cut by max_new_tokens)

    @property
    def reply_lengths(self) -> torch.Tensor:
        return self.mask.sum(1)


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def sample_replies(actor, prompts: list[list[int]], gen, pad_id: int, eos_id: int) -> list[list[int]]:
    """One sampled reply per prompt, cut after its first EOS (kept: the reward model was trained with it)."""
    from transformers import GenerationConfig

    device = next(actor.parameters()).device
    ids, mask = _left_pad(prompts, pad_id, device)
    # A fresh GenerationConfig: the checkpoint's own (repetition penalty, ...) would sample from a distribution
    # other than the one whose log-probabilities PPO computes. top_k must be 0, not None, to be off: None falls back
    # to transformers' default of 50, and the samples would come from a truncated distribution (KL estimates < 0).
    config = GenerationConfig(do_sample=True, temperature=gen.temperature, top_k=gen.top_k, top_p=gen.top_p,
                              max_new_tokens=gen.max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id)
    was_training = actor.training
    actor.eval()
    out = actor.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    actor.train(was_training)
    replies = []
    for row in out[:, ids.size(1):].tolist():
        replies.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
    return replies


def build_batch(prompts: list[list[int]], replies: list[list[int]], pad_id: int, eos_id: int, device) -> Batch:
    sequences = [p + r for p, r in zip(prompts, replies)]
    width = max(len(s) for s in sequences)
    start = min(len(p) for p in prompts) - 1
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    mask = torch.zeros((len(sequences), width - 1 - start))
    for row, (p, r) in enumerate(zip(prompts, replies)):
        ids[row, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        attention[row, : len(p) + len(r)] = 1
        # token j is predicted at position j - 1, stored at index j - 1 - start
        mask[row, len(p) - 1 - start : len(p) + len(r) - 1 - start] = 1
    ended = torch.tensor([bool(r) and r[-1] == eos_id for r in replies])
    return Batch(ids.to(device), attention.to(device), mask.to(device), start, sequences, ended.to(device))


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int,
                   temperature: float) -> torch.Tensor:
    """log pi(token i+1 | tokens <= i) for positions start..L-2, at the sampling temperature; `[B, L-1-start]`."""
    keep = input_ids.size(1) - start
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits
    logits = logits[:, :-1].float() / temperature
    targets = input_ids[:, start + 1 :]
    return torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)


def token_values(critic, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
    """The critic's value of the state before token i+1, positions start..L-2; `[B, L-1-start]`.

    The critic is a sequence-classification model; its head is applied to every hidden state, not only the last.
    """
    hidden = backbone(critic)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return critic.score(hidden[:, start:-1]).squeeze(-1).float()
