"""LoRA through PEFT: target modules per architecture, and merging an adapter into its base."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kotune.common.options import opt

# Attention projections per architecture, as the origin projects (KoAlpaca, chatKoAlpaca) and PEFT's own defaults use them.
TARGET_MODULES: dict[str, list[str]] = {
    "gpt_neox": ["query_key_value"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gpt2": ["c_attn"],
    "gptj": ["q_proj", "v_proj"],
}


def target_modules_for(model_type: str, requested: list[str] | None) -> list[str] | str:
    """Requested modules, else the table's entry, else PEFT's "all-linear" (every linear layer but the head)."""
    return requested or TARGET_MODULES.get(model_type, "all-linear")


def apply_lora(model, *, r: int, alpha: int, dropout: float, target_modules: list[str] | None):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, task_type="CAUSAL_LM",
                                            target_modules=target_modules_for(model.config.model_type, target_modules)))


def merge_adapter(adapter_dir: str, out_dir: str, *, trust_remote_code: bool = False, base: str | None = None) -> Path:
    """Merge a LoRA adapter into its base and save a plain model (safetensors) + tokenizer to `out_dir`.

    Args:
        base: the base model folder to merge into, instead of the one the adapter records (a moved base).
    """
    from kotune.models.load import adapter_base, load_model, load_tokenizer, resolve_model_path

    model = load_model(adapter_dir, trust_remote_code=trust_remote_code, base=base)
    merged = model.merge_and_unload()
    # Merge in fp32, save in the dtype the base is stored in: a 1.3B fp16 base (2.7 GB) merged would otherwise be
    # written as 5.3 GB of fp32, and every later stage would load twice the bytes.
    stored = _stored_dtype(adapter_base(resolve_model_path(adapter_dir), base), trust_remote_code)
    if stored is not None:
        merged.to(stored)
    out = Path(out_dir)
    merged.save_pretrained(out, safe_serialization=True)
    load_tokenizer(adapter_dir, trust_remote_code=trust_remote_code).save_pretrained(out)
    return out


def _stored_dtype(base: str, trust_remote_code: bool):
    """The half-precision dtype a base model's config says its weights are stored in, else None (keep fp32)."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if dtype in (torch.float16, torch.bfloat16) else None


@dataclass
class MergeConfig:
    """`kotune lora merge ADAPTER --out DIR`."""

    adapter: str = opt(help="LoRA adapter folder (as `kotune sft method=lora` writes it)")
    out: str = opt(help="folder for the merged model and tokenizer", cli="flag")
    base: str | None = opt(None, "merge into this base model folder instead of the one the adapter records (a moved "
                                 "base)")
    trust_remote_code: bool = opt(False, "run Python code shipped with the model repository")


def run(cfg: MergeConfig) -> None:
    """`kotune lora merge`."""
    out = merge_adapter(cfg.adapter, cfg.out, trust_remote_code=cfg.trust_remote_code, base=cfg.base)
    print(f"merged model saved to {out}")
