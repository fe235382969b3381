"""Packing never drops or duplicates a token, keeps document order, and keeps documents apart in attention."""

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kotune.data.token_blocks import TokenBlocks, is_held_out, write_token_files

DOCS = [f"{i}번째 문서입니다. " + "한국어 문장 " * (i % 7) for i in range(300)]


def test_count_in_equals_count_out_in_order(tmp_path, tiny_neox):
    tok = AutoTokenizer.from_pretrained(tiny_neox)
    meta = write_token_files(iter(DOCS), tok, tmp_path, eval_fraction=0.1, batch_size=64)
    expected = {"train": [], "eval": []}
    for i, doc in enumerate(DOCS):
        split = "eval" if is_held_out(i, 0.1) else "train"
        expected[split].extend([*tok(doc, add_special_tokens=False)["input_ids"], tok.eos_token_id])
    assert 0 < meta["eval_documents"] < 100 and meta["train_documents"] + meta["eval_documents"] == len(DOCS)
    for split in ("train", "eval"):
        blocks = TokenBlocks(tmp_path / f"{split}.bin", 37, tok.eos_token_id, tok.pad_token_id)
        out = np.concatenate([blocks.block(i) for i in range(len(blocks))]).tolist()
        assert out == expected[split]  # nothing dropped, nothing repeated, order kept
        assert meta[f"{split}_tokens"] == len(expected[split])
        assert all(blocks.length(i) == 37 for i in range(len(blocks) - 1))


def test_documents_in_a_block_do_not_attend_to_each_other(tmp_path, tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    docs = ["안녕하세요 첫 문서", "두 번째 문서는 조금 더 깁니다", "셋"]
    write_token_files(iter(docs), tok, tmp_path, eval_fraction=0.0001)
    blocks = TokenBlocks(tmp_path / "train.bin", 64, tok.eos_token_id, tok.pad_token_id)
    batch = blocks.collate([0])
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for doc in docs:
            ids = [*tok(doc, add_special_tokens=False)["input_ids"], tok.eos_token_id]
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            assert torch.allclose(packed[start : start + len(ids)], alone, atol=1e-5)
            start += len(ids)


def test_short_last_block_is_padded_without_losing_tokens(tmp_path, tiny_neox):
    tok = AutoTokenizer.from_pretrained(tiny_neox)
    write_token_files(iter(DOCS[:20]), tok, tmp_path, eval_fraction=0.0001)
    blocks = TokenBlocks(tmp_path / "train.bin", 50, tok.eos_token_id, tok.pad_token_id)
    last = len(blocks) - 1
    batch = blocks.collate([0, last])
    n = blocks.length(last)
    assert n < 50
    assert (batch["labels"][1, n:] == -100).all() and (batch["labels"][1, 1:n] != -100).all()
    positions = batch["position_ids"][1]
    assert (positions[n:] == torch.arange(positions[n - 1] + 1, positions[n - 1] + 1 + 50 - n)).all()
    assert int((batch["labels"][:, 1:] != -100).sum()) == blocks.trained_tokens(0) + blocks.trained_tokens(last)
