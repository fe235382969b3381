"""Reward-model scores, pairwise accuracy, and the probe that proves a reward model is the trained one.

Scores are read the way transformers' `*ForSequenceClassification` reads them, so a reward model loaded alone with
`AutoModelForSequenceClassification` gives the same numbers as kotune: sequences are right-padded and the head's
output is taken at the last token that is not `pad_token_id`. When pad == eos (polyglot-ko, GPT-NeoX) that is the
last reply token before EOS; otherwise it is the EOS itself. Either way it is the same position in training,
evaluation, PPO and a user's own script, and it does not move with padding (`tests/unit/preference`).

chatKoAlpaca trained a reward head, never saved it, and scored PPO with a fresh random head. Here the
reward stage saves a probe (held-out sequences and their scores) next to the model and checks a reload against
it; PPO checks the reward model it holds against a copy loaded alone and against that probe before it starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

PROBE_FILE = "reward_probe.json"


class RewardModelError(ValueError):
    """The reward model is not the trained one (missing head, different scores); the message says what to fix."""


def pad_right(sequences: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def score_sequences(model, sequences: list[list[int]], pad_id: int, batch_size: int = 16) -> torch.Tensor:
    """Reward of each token sequence (prompt + reply + EOS) as float32 on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(sequences), batch_size):
        ids, mask = pad_right(sequences[start : start + batch_size], pad_id, device)
        out.append(model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, 0].float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def write_probe(path: str | Path, sequences: list[list[int]], scores: torch.Tensor) -> None:
    Path(path).write_text(json.dumps({"input_ids": sequences, "scores": scores.tolist()}))


def read_probe(folder: str | Path) -> dict | None:
    path = Path(folder) / PROBE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# How far scores may differ from the fp32 scores saved at training time when the reward model runs in lower
# precision (absolute, scaled by max(1, |score|)).
PROBE_TOLERANCE = {"fp32": 1e-3, "bf16": 6e-2, "fp16": 1e-2}


def load_reward_model(path: str, *, dtype: str = "fp32", trust_remote_code: bool = False, device=None):
    """A trained reward model from `path`, in eval mode with gradients off.

    Raises:
        RewardModelError: `path` holds no trained head (transformers would initialise `score` at random, which is
            what made chatKoAlpaca's PPO learn nothing), or its config has no pad token to find the scored position.
    """
    from kotune.preference.models import load_scalar_model

    model, missing = load_scalar_model(path, dtype=dtype, trust_remote_code=trust_remote_code)
    head_missing = [k for k in missing if k.split(".")[0] == "score"]
    if head_missing:
        raise RewardModelError(
            f"reward_model {path} has no trained reward head ({', '.join(head_missing)} missing from the checkpoint, "
            "so transformers would score with a randomly initialised head). Point reward_model at the folder "
            "`kotune reward` wrote, not at the SFT model."
        )
    if model.config.pad_token_id is None:
        raise RewardModelError(f"reward_model {path}: config.pad_token_id is unset, so the scored position is undefined")
    model.requires_grad_(False)
    model.eval()
    return model.to(device) if device is not None else model


def check_reward_model(model, path: str, *, dtype: str = "fp32", trust_remote_code: bool = False,
                       probe_size: int = 8, extra_sequences: list[list[int]] | None = None) -> dict:
    """Check that `model` is the reward model saved at `path`: it must score a fixed probe batch exactly as the
    saved model loaded alone does, and (when the reward stage saved a probe) as it scored at training time.

    Returns:
        what was compared, for the run report.
    Raises:
        RewardModelError: naming the differing scores and the likely cause.
    """
    probe = read_probe(path)
    sequences = (probe["input_ids"][:probe_size] if probe else []) + list(extra_sequences or [])
    if not sequences:
        raise RewardModelError(f"reward_model {path}: no {PROBE_FILE} and no probe sequences to check it with")
    pad_id = model.config.pad_token_id
    device = next(model.parameters()).device
    alone = load_reward_model(path, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
    in_use = score_sequences(model, sequences, pad_id)
    reference = score_sequences(alone, sequences, alone.config.pad_token_id)
    del alone
    diff = float((in_use - reference).abs().max())
    if diff > 1e-5 * max(1.0, float(reference.abs().max())):
        raise RewardModelError(
            f"the reward model in use does not score the probe batch as {path} does when loaded alone (max difference "
            f"{diff:.4g}; in use {in_use[:4].tolist()}, saved {reference[:4].tolist()}). It is not the trained reward "
            "model: build it only with load_reward_model(reward_model), never as a copy of the critic or the actor."
        )
    report = {"probe_sequences": len(sequences), "max_diff_vs_loaded_alone": diff}
    if probe:
        saved = torch.tensor(probe["scores"][: len(probe["input_ids"][:probe_size])])
        drift = (reference[: len(saved)] - saved).abs() / saved.abs().clamp(min=1.0)
        report["max_diff_vs_training_time"] = float(drift.max())
        if float(drift.max()) > PROBE_TOLERANCE.get(dtype, 1e-3):
            raise RewardModelError(
                f"reward_model {path} no longer gives the scores saved with it in {PROBE_FILE} (max relative difference "
                f"{float(drift.max()):.4g}): its weights changed after `kotune reward` saved them; train it again."
            )
    return report


class RewardModelFunction:
    """The reward model as a TRL reward function (GRPO/RLOO): prompts are tokenized as the reward model was
    trained (`pairs.prompt_ids`) and the generated completion ids are appended as sampled, so a completion is
    scored exactly as our PPO scores it."""

    __name__ = "reward_model"

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id

    def __call__(self, prompts, completions, completion_ids, **_) -> list[float]:
        from kotune.data.schema import Message
        from kotune.preference.pairs import prompt_ids

        messages = [tuple(Message(m["role"], m["content"], m.get("input")) for m in p) for p in prompts]
        sequences = []
        for ids, completion in zip(prompt_ids(self.tokenizer, messages), completion_ids):
            completion = list(completion)
            if self.eos_id in completion:  # trainers pad after EOS; the reply ends at the first one
                completion = completion[: completion.index(self.eos_id) + 1]
            sequences.append(ids + completion)
        return score_sequences(self.model, sequences, self.model.config.pad_token_id).tolist()
