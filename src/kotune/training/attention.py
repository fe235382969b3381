"""Which attention kernel and which batching a training run uses, decided once when the model is loaded.

Packed (padding-free) rows hold several sequences kept apart by `position_ids` that restart at 0. transformers
turns those into a mask of separate documents for every kernel, so packing is exact with any of them, but only
some kernels skip the masked-out blocks:

- `flash_attention_2/3` (the flash-attn package, CUDA): varlen attention over the sequences, no mask at all.
- `flex_attention` (torch, no extra package): a block-sparse mask; on CUDA it skips the blocks between
  sequences. On CPU torch 2.13 has no flex_attention backward ("FlexAttention does not support backward on
  CPU"), so it cannot train there.
- `sdpa` / `eager`: a dense (tokens x tokens) mask over the whole packed row: every sequence attends over the
  row's full width and masks most of it out. On CPU (benchmarks/sft_throughput.py) padding-free with sdpa was
  1.9x slower than length-sorted padded micro-batches, which pad little (same run, 1 thread, 30 steps).

So `auto` packs only where a kernel skips the blocks between sequences (flash-attention or flex_attention on
CUDA), and an explicit `padding_free` gets the fastest exact kernel the device has.
"""

from __future__ import annotations

import importlib.util

# Kernels that work on the sequences of a packed row without a dense mask over the whole row.
SPARSE_PACKED = ("flash_attention_2", "flash_attention_3", "flex_attention")
# Kernels with a backward pass only on these device types (torch 2.13: flex_attention raises on CPU and MPS).
TRAINS_ON = {"flex_attention": ("cuda", "xpu", "hpu"), "flash_attention_2": ("cuda",), "flash_attention_3": ("cuda",)}


def has_flash_attn() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def flex_trainable(model) -> bool:
    """Whether transformers can train `model` (or the model inside a PEFT wrapper) with flex_attention: its class
    must support it, and it refuses attention dropout ("`flex_attention` does not support `dropout`")."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "_supports_flex_attn", False)) and not getattr(base.config, "attention_dropout", 0.0)


def packed_attention(device_type: str, flash_attn: bool | None = None, flex_ok: bool = True) -> str:
    """The fastest exact attention for packed rows on `device_type`: flash-attention where installed on CUDA,
    else flex_attention where it can train (and the model takes it), else sdpa (dense packed mask)."""
    flash_attn = has_flash_attn() if flash_attn is None else flash_attn
    if device_type == "cuda" and flash_attn:
        return "flash_attention_2"
    if flex_ok and device_type in TRAINS_ON["flex_attention"]:
        return "flex_attention"
    return "sdpa"


def check_trainable(attention: str | None, device_type: str) -> None:
    """Refuse, before loading anything, an attention kernel that cannot run backward on this device."""
    if attention in TRAINS_ON and device_type not in TRAINS_ON[attention]:
        raise ValueError(
            f"train.attn_implementation={attention}: it has no backward pass on {device_type} "
            f"(runs on {', '.join(TRAINS_ON[attention])}); use sdpa there, or leave it unset"
        )


def plan_attention(batching: str, attention: str | None, device_type: str, flash_attn: bool | None = None,
                   flex_ok: bool = True) -> tuple[str, str | None]:
    """`(batching, attn_implementation)` for a run.

    Args:
        batching: `train.batching`: auto | padded | padding_free.
        attention: `train.attn_implementation` as the user set it (None: unset).
        device_type: the training device's type ("cpu", "cuda", ...).
        flash_attn: whether flash-attn is installed (None: look).
        flex_ok: whether the model can train with flex_attention (`flex_trainable`).

    Returns:
        The batching to use (padded | padding_free) and the attention to run the model with (None: as loaded,
        transformers' default, sdpa where it can). A set attention is kept; `auto` then packs only if that kernel
        skips the blocks between sequences on this device.
    """
    check_trainable(attention, device_type)
    fastest = packed_attention(device_type, flash_attn, flex_ok)
    if batching == "padded":
        return "padded", attention
    if batching == "padding_free":
        return "padding_free", attention or fastest
    # auto: pack only with a kernel that does not pay for a dense mask over the whole packed row.
    chosen = attention or fastest
    if chosen in SPARSE_PACKED:
        return "padding_free", chosen
    return "padded", attention


def packed_only_attention(attention: str | None, device_type: str, flash_attn: bool | None = None,
                          flex_ok: bool = True) -> str | None:
    """The attention for a stage whose rows are always packed (pre-training blocks): the set one, else the fastest
    exact one for packed rows on this device (None where that is transformers' own default, sdpa)."""
    check_trainable(attention, device_type)
    if attention:
        return attention
    fastest = packed_attention(device_type, flash_attn, flex_ok)
    return None if fastest == "sdpa" else fastest


def use_attention(model, attention: str | None) -> None:
    """Switch a loaded model (or the model inside a PEFT wrapper) to `attention` where it runs another one
    (transformers' `set_attn_implementation`); None keeps what it loaded with."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if attention and attention != base.config._attn_implementation:
        base.set_attn_implementation(attention)
