"""The loop's loss over selected logits equals the plain full-logits loss, for plain and LoRA-wrapped models."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from kotune.common.losses import causal_lm_loss_sum
from kotune.models.lora import apply_lora
from kotune.training.loop import _accepts_logits_to_keep, _trained_loss_sum


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
@pytest.mark.parametrize("lora", [False, True])
def test_selected_logits_loss_equals_full_loss(tiny_models, arch, lora):
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
    if lora:
        model = apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules=None)
    assert _accepts_logits_to_keep(model)
    ids = torch.randint(5, 500, (3, 40))
    labels = ids.clone()
    labels[:, :15] = -100  # prompt
    labels[2, 30:] = -100  # padding of a shorter row
    batch = {"input_ids": ids, "attention_mask": (labels != -100) | (torch.arange(40) < 15)}
    with torch.no_grad():
        selected = _trained_loss_sum(model, dict(batch), labels, select_logits=True)
        full, count = causal_lm_loss_sum(model(**batch).logits, labels)
    assert count == 25 + 25 + 15
    assert torch.allclose(selected, full, rtol=1e-5)
