"""Rollouts: replies are sampled from the distribution PPO computes log-probabilities of, and the batched,
padded log-probabilities of reply tokens are those of each sequence alone."""

from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kotune.data.schema import Message
from kotune.preference.pairs import prompt_ids
from kotune.preference.rollout import build_batch, sample_replies, token_logprobs

PROMPTS = [(Message("user", "안녕하세요"),), (Message("user", "오늘 점심 메뉴로 무엇을 추천하나요? 자세히 알려 주세요."),)]


def load(path):
    tok = AutoTokenizer.from_pretrained(path)
    return tok, AutoModelForCausalLM.from_pretrained(path).eval()


def test_replies_are_sampled_from_the_full_distribution(sft_neox):
    # transformers samples from the top 50 tokens unless told otherwise; PPO's ratio and KL assume the full
    # distribution. A random tiny model puts most of its mass outside its top 50, so truncation would show at once.
    tok, model = load(sft_neox)
    (ids,) = prompt_ids(tok, PROMPTS[:1])
    with torch.no_grad():
        probs = model(torch.tensor([ids])).logits[0, -1].softmax(-1)
    top50 = set(probs.topk(50).indices.tolist())
    tail_mass = 1 - float(probs.topk(50).values.sum())
    torch.manual_seed(0)
    gen = SimpleNamespace(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=1)
    firsts = [r[0] for r in sample_replies(model, [ids] * 300, gen, tok.pad_token_id, tok.eos_token_id)]
    outside = sum(t not in top50 for t in firsts) / len(firsts)
    assert tail_mass > 0.5 and abs(outside - tail_mass) < 0.1


def test_batched_logprobs_are_those_of_each_sequence_alone(sft_neox):
    tok, model = load(sft_neox)
    prompts = prompt_ids(tok, PROMPTS)
    torch.manual_seed(0)
    gen = SimpleNamespace(temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=6)
    replies = sample_replies(model, prompts, gen, tok.pad_token_id, tok.eos_token_id)
    batch = build_batch(prompts, replies, tok.pad_token_id, tok.eos_token_id, "cpu")
    assert batch.reply_lengths.tolist() == [len(r) for r in replies]
    with torch.no_grad():
        batched = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.start, 0.7)
        for row, (p, r) in enumerate(zip(prompts, replies)):
            logits = model(torch.tensor([p + r])).logits[0] / 0.7
            alone = torch.stack([logits[len(p) - 1 + k].log_softmax(-1)[tok_id] for k, tok_id in enumerate(r)])
            assert torch.allclose(batched[row][batch.mask[row].bool()], alone, atol=1e-4)
