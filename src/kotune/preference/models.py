"""Loading the SFT model as a policy or as a scalar-head model, and precision choices shared by the stages.

An SFT run with `method: lora` saves an adapter. Preference training needs the SFT *policy* as its starting point
and (DPO, PPO) as its frozen reference, so an adapter is merged into its base here: afterwards "the base with the
new adapter disabled" is exactly the SFT model, which is what TRL and our PPO use as the LoRA reference. Loading
an adapter with PEFT's defaults instead would give a frozen (is_trainable=False) adapter that silently trains
nothing.
"""

from __future__ import annotations

import torch

from kotune.models.load import DTYPES, adapter_base, is_adapter, load_model
from kotune.common.device import resolve_precision  # noqa: F401  (re-exported for the stages)
from kotune.training.config import frozen_dtype


def trl_precision_args(precision: str) -> dict:
    """TrainingArguments for TRL trainers. TRL 1.16 turns on bf16 and gradient checkpointing by default, even on
    CPU, where bf16 is emulated and slow; every flag is therefore set explicitly."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not torch.cuda.is_available()}


def check_lora_start(path: str, method: str) -> None:
    """A new LoRA adapter on top of a merged SFT adapter would be saved against the raw base model (PEFT records
    the base's name), so a user loading it would silently lose the SFT. Refuse with the fix."""
    if method == "lora" and is_adapter(path):
        raise ValueError(f"model {path} is a LoRA adapter: merge it first (`kotune lora merge {path} --out DIR`) and "
                         "set model to DIR, so the new adapter is saved against the SFT weights")


def load_policy(path: str, *, trust_remote_code: bool = False, dtype: str = "fp32"):
    """The SFT model as a plain causal LM (an adapter folder is merged into its base)."""
    model = load_model(path, trust_remote_code=trust_remote_code, dtype=dtype)
    if is_adapter(path):
        # PEFT froze the base weights when it loaded the adapter; merged, they are the weights to train.
        model = model.merge_and_unload().requires_grad_(True)
    return model


def load_scalar_model(path: str, *, trust_remote_code: bool = False, dtype: str = "fp32"):
    """`path` as AutoModelForSequenceClassification(num_labels=1), and the names of weights it did not contain.

    From an SFT model the head (`score`) is new and listed as missing; from a saved reward model nothing is missing.
    An SFT adapter folder is loaded onto its base and merged, as for the policy.
    """
    from transformers import AutoModelForSequenceClassification

    base = adapter_base(path) if is_adapter(path) else path
    model, info = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, output_loading_info=True
    )
    if base != path:
        from peft import PeftConfig, PeftModel

        # The adapter was trained on the causal LM; its LoRA weights sit on the same backbone modules here. Loaded
        # without its task type, since PEFT's causal-LM wrapper expects generation methods a classifier lacks.
        config = PeftConfig.from_pretrained(path)
        config.task_type = None
        model = PeftModel.from_pretrained(model, path, config=config).merge_and_unload().requires_grad_(True)
    return model, sorted(info["missing_keys"])


def head_names(model) -> list[str]:
    """Parameter names of the scalar head of a sequence-classification model (`score` in transformers)."""
    return [n for n, _ in model.named_parameters() if n.split(".")[0] == "score"]


def backbone(model):
    """The transformer under a sequence-classification model's head (`model.gpt_neox`, `model.model`, ...)."""
    return getattr(model, model.base_model_prefix)


def policy_dtype(method: str, precision: str) -> str:
    """The dtype to load the policy in: full fine-tuning trains fp32 weights (autocast computes in bf16); a LoRA
    policy's base is frozen, so it is held in the compute precision (`frozen_dtype`) and PEFT keeps adapters fp32."""
    return "fp32" if method == "full" else frozen_dtype(precision)


def frozen_copy(model, precision: str):
    """A frozen copy of `model` (the reference) in the dtype frozen weights have under `precision` (bf16 under bf16:
    half the memory of the fp32 policy it copies, and what autocast computes in anyway)."""
    import copy

    return copy.deepcopy(model).to(DTYPES[frozen_dtype(precision)]).requires_grad_(False).eval()


def disable_dropout(model) -> None:
    """Dropout off: PPO's ratio and the KL to the reference must compare the same deterministic function."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
