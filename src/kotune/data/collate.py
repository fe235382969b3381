"""Collators only pad (or pack): labels were fixed once at tokenization."""

from __future__ import annotations

import torch

from kotune.data.tokenize import IGNORE_INDEX


def pad_batch(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad `(input_ids, labels)` pairs to the longest; padding is masked in attention and labels."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def pack_batch(examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Concatenate examples into one row with position_ids restarting at 0 for each (padding-free).

    Attention kernels that read sequence boundaries from position_ids keep the examples apart: flash-attention
    varlen, and for sdpa/eager transformers' packed-sequence mask, which it builds only when the forward gets
    no attention_mask and no cache (call the model with `use_cache=False`). Each example's first label is ignored:
    in its own row no token predicts it, and packed it would be predicted from the previous example.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for ids, labs in examples:
        input_ids.extend(ids)
        labels.extend([IGNORE_INDEX, *labs[1:]])
        position_ids.extend(range(len(ids)))
    return {"input_ids": torch.tensor([input_ids]), "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([position_ids])}
