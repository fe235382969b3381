"""Where a command computes and in which precision: decided the same way for training, evaluation and serving."""

from __future__ import annotations


def resolve_device(device: str | None = None) -> str:
    """`device` as given; unset: cuda where a GPU is visible, else cpu."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: str | None = None) -> str:
    """`auto`: bf16 on a GPU that supports it, else fp32 (CPUs are slow and inexact in half precision); any other
    value as given. `device` unset: the one `resolve_device` picks."""
    if precision != "auto":
        return precision
    import torch

    return "bf16" if resolve_device(device).startswith("cuda") and torch.cuda.is_bf16_supported() else "fp32"
