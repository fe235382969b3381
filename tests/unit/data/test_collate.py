"""Padding-free packing is exact: a packed row gives the same loss as the padded batch."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kotune_test_paths import SAMPLES
from kotune.common.losses import causal_lm_loss_sum
from kotune.data.collate import pack_batch, pad_batch
from kotune.data.loading import load_examples
from kotune.data.templates import install_template
from kotune.data.tokenize import tokenize_conversations


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
def test_packed_loss_equals_padded_loss(tiny_models, arch):
    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    install_template(tok, "ko_chat")
    convs = load_examples([str(SAMPLES / "kochatgpt_conversation.sample.txt")]).examples[:4]
    examples = [(e.input_ids, e.labels) for e in tokenize_conversations(tok, convs, max_length=256)]
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch], attn_implementation="sdpa").eval()
    padded = pad_batch(examples, tok.pad_token_id)
    packed = pack_batch(examples)
    with torch.no_grad():
        loss_pad, n_pad = causal_lm_loss_sum(model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits, padded["labels"])
        loss_pack, n_pack = causal_lm_loss_sum(model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits, packed["labels"])
    assert n_pad == n_pack == sum(sum(l != -100 for l in labels[1:]) for _, labels in examples)
    assert torch.allclose(loss_pad, loss_pack, rtol=1e-5), (loss_pad, loss_pack)


def test_pad_batch_masks_padding():
    batch = pad_batch([([5, 6, 7], [-100, 6, 7]), ([8], [-100])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
