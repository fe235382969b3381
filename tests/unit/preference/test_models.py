"""An SFT run saved as a LoRA adapter is the starting point and the reference *with* its adapter: merged, never
the raw base and never a frozen, untrainable adapter."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from kotune.preference.models import backbone, check_lora_start, load_policy, load_scalar_model


@pytest.fixture(scope="module")
def sft_adapter(tiny_neox, tmp_path_factory):
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_neox),
                           LoraConfig(r=4, target_modules=["query_key_value"], task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a trained adapter: B is no longer zero
            torch.nn.init.normal_(param, std=0.5)
    out = tmp_path_factory.mktemp("adapter") / "sft"
    model.save_pretrained(out)
    return out


def test_an_sft_adapter_is_merged_into_policy_and_reward_backbone(tiny_neox, sft_adapter):
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_neox), sft_adapter).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_neox).eval()
    policy = load_policy(str(sft_adapter)).eval()
    scalar, missing = load_scalar_model(str(sft_adapter))
    with torch.no_grad():
        expected = sft(ids).logits
        assert not torch.allclose(expected, base(ids).logits, atol=1e-3)  # the adapter matters
        assert torch.allclose(policy(ids).logits, expected, atol=1e-4)
        assert all(p.requires_grad for p in policy.parameters())  # PEFT froze the base when it loaded the adapter
        hidden = sft.base_model.model.gpt_neox(ids).last_hidden_state
        assert torch.allclose(backbone(scalar.eval())(ids).last_hidden_state, hidden, atol=1e-4)
    assert missing == ["score.weight"]
    assert all(p.requires_grad for p in scalar.parameters())


def test_a_new_lora_on_top_of_an_sft_adapter_is_refused(sft_adapter):
    check_lora_start(str(sft_adapter), "full")
    with pytest.raises(ValueError, match="merge it first"):
        check_lora_start(str(sft_adapter), "lora")
