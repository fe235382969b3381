"""Held-out loss per example: equal to a hand computation, whichever way the examples are shared among processes;
its before/after figures and their paired change."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from kotune_test_paths import FP32_UNIT_ROUNDOFF, summation_tolerance
from kotune.common.losses import IGNORE_INDEX
from kotune.data.tokenize import TokenizedExample
from kotune.sft.train import SupervisedData
from kotune.training.held_out import before_after, held_out_line, score_share


def examples(vocab: int) -> list[TokenizedExample]:
    """Five examples of different lengths; prompts masked; one with two trained spans (a second reply)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for length, prompt in [(9, 4), (23, 10), (14, 13), (31, 5), (6, 2)]:
        ids = torch.randint(5, vocab, (length,), generator=g).tolist()
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        if length > 20:
            labels[prompt + 3:prompt + 7] = [IGNORE_INDEX] * 4  # a second user turn between two replies
        out.append(TokenizedExample(ids, labels))
    return out


def by_hand(model, example: TokenizedExample) -> tuple[float, int, float]:
    """Summed -log p(label) over the trained tokens, one example alone, log-softmax in float64; and the size of
    the terms it rounds (|logsumexp| + |target logit| per token)."""
    with torch.no_grad():
        logits = model(torch.tensor([example.input_ids])).logits[0].double()
    total, magnitude, count = 0.0, 0.0, 0
    for t in range(1, len(example.labels)):
        if example.labels[t] != IGNORE_INDEX:
            lse, z = torch.logsumexp(logits[t - 1], 0).item(), logits[t - 1, example.labels[t]].item()
            total, magnitude, count = total + lse - z, magnitude + abs(lse) + abs(z), count + 1
    return total, count, magnitude


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
def test_per_example_loss_matches_a_hand_computation_for_any_world_size(tiny_models, arch):
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
    data = SupervisedData(examples(model.config.vocab_size), pad_id=0, packed=False)
    expected = [by_hand(model, e) for e in data.examples]
    # One example alone vs. padded among others, float32 vs. float64: every logit is a sum of hidden_size products
    # and every logsumexp a sum of vocab_size exponentials, rounded in another order; bound each token's error by
    # the rounding of such sums (`summation_tolerance`) over the terms it adds up.
    terms = max(model.config.hidden_size, model.config.vocab_size)
    for world in (1, 2, 3):
        for select_logits in (True, False):
            with torch.no_grad():
                scored = [row for rank in range(world)
                          for row in score_share(model, data, rank, world, 2, select_logits)]
            assert sorted(i for i, _, _ in scored) == list(range(len(data)))  # every example once, on some rank
            for index, loss_sum, count in scored:
                total, n, magnitude = expected[index]
                assert count == n
                assert abs(loss_sum - total) <= summation_tolerance(magnitude, terms), (world, index, loss_sum, total)


def test_before_after_is_token_weighted_and_the_change_is_paired():
    tokens = [10, 200, 30, 50, 80, 5, 40, 60, 120, 25]
    g = torch.Generator().manual_seed(1)
    before = [n * (3.0 + torch.rand((), generator=g).item()) for n in tokens]
    after = [b - n * 0.5 for b, n in zip(before, tokens)]  # every example 0.5 nats a token lower
    result = before_after((before, tokens), (after, tokens), seed=0)
    assert result["before"]["loss"]["value"] == pytest.approx(sum(before) / sum(tokens), rel=8 * FP32_UNIT_ROUNDOFF)
    assert result["before"]["perplexity"]["value"] == pytest.approx(math.exp(sum(before) / sum(tokens)), rel=1e-12)
    change = result["change"]
    # A uniform shift: every resample has the same change, so the paired interval is the point.
    assert change["low"] == pytest.approx(-0.5, abs=1e-12) and change["high"] == pytest.approx(-0.5, abs=1e-12)
    assert change["changed"] and "lowered it measurably" in held_out_line(result)
    same = before_after((before, tokens), (before, tokens), seed=0)
    assert not same["change"]["changed"] and "changed nothing measurable" in held_out_line(same)
    with pytest.raises(ValueError, match="not the same held-out examples"):
        before_after((before, tokens), (after, tokens[::-1]), seed=0)
    assert "no score of the starting model" in held_out_line(before_after(None, (after, tokens), seed=0))
