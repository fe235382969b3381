"""Held-out figures of the preference stages: the policy's reply log-probabilities against a token-by-token hand
computation, accuracy/margin/chosen from them, "changed nothing measurable", and the seeded held-out prompt split."""

import json
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from kotune.preference.heldout import compare, preference_values, reply_logprobs
from kotune.preference.pairs import TokenPair, split_held_out
from kotune_test_paths import FP32_UNIT_ROUNDOFF, summation_tolerance

# One token's log-probability goes through a few dozen float32 roundings in a 2-layer model (embedding, attention,
# MLP, log-softmax); batched with padding it may round differently from the sequence alone, by a few dozen units of
# roundoff relative to its size. The sum over a reply adds the summation error on top (`summation_tolerance`).
PER_TOKEN_ROUNDINGS = 64


def by_hand(model, prompt: list[int], reply: list[int]) -> tuple[float, float]:
    """sum log p(reply[i] | prompt + reply[:i]), each from a forward of the prefix alone; and sum |log p|."""
    total, magnitude = 0.0, 0.0
    with torch.no_grad():
        for i, token in enumerate(reply):
            prefix = torch.tensor([prompt + reply[:i]])
            logp = float(model(input_ids=prefix).logits[0, -1].float().log_softmax(-1)[token])
            total, magnitude = total + logp, magnitude + abs(logp)
    return total, magnitude


def tolerance(magnitude: float, terms: int) -> float:
    return summation_tolerance(magnitude, terms) + PER_TOKEN_ROUNDINGS * FP32_UNIT_ROUNDOFF * magnitude


def toy_pairs_ids(vocab: int, n: int = 6) -> list[TokenPair]:
    g = torch.Generator().manual_seed(0)

    def ids(length):
        return torch.randint(3, vocab, (length,), generator=g).tolist()

    # prompts and replies of different lengths, so the batch is padded
    return [TokenPair(ids(3 + i), ids(2 + (i % 3)), ids(5 - (i % 3))) for i in range(n)]


def test_reply_logprobs_and_pair_figures_match_a_hand_computation(sft_neox):
    model = AutoModelForCausalLM.from_pretrained(sft_neox).eval()
    pairs = toy_pairs_ids(model.config.vocab_size)
    got = reply_logprobs(model, [p.prompt_ids for p in pairs], [p.chosen_ids for p in pairs], pad_id=0, batch_size=4)
    values = preference_values(model, pairs, pad_id=0)
    for i, p in enumerate(pairs):
        chosen, c_mag = by_hand(model, p.prompt_ids, p.chosen_ids)
        rejected, r_mag = by_hand(model, p.prompt_ids, p.rejected_ids)
        assert abs(float(got[i]) - chosen) <= tolerance(c_mag, len(p.chosen_ids))
        assert abs(values["chosen_logprob"][i] - chosen) <= tolerance(c_mag, len(p.chosen_ids))
        margin_tolerance = tolerance(c_mag, len(p.chosen_ids)) + tolerance(r_mag, len(p.rejected_ids))
        assert abs(values["margin"][i] - (chosen - rejected)) <= margin_tolerance
        if abs(chosen - rejected) > margin_tolerance:  # a near-tie may fall either way; none does in this set
            assert values["accuracy"][i] == float(chosen > rejected)
    assert set(values["accuracy"]) == {0.0, 1.0}  # random replies: some pairs each way, so both branches count


def test_compare_says_when_nothing_changed_measurably():
    before = {"accuracy": [0.0, 1.0] * 20, "margin": [float(i % 7) - 3 for i in range(40)]}
    same = compare(before, before, before_is="sft")
    assert not same["changed"]
    for figure in same["figures"].values():
        assert figure["difference"] == {"value": 0.0, "low": 0.0, "high": 0.0, "n": 40, "changed": False}
        assert figure["before"] == figure["after"]
    # Every pair flips to correct and every margin rises by 2: far outside any resampling spread.
    better = {"accuracy": [1.0] * 40, "margin": [m + 2 for m in before["margin"]]}
    moved = compare(before, better, before_is="sft")
    assert moved["changed"] and moved["examples"] == 40 and moved["before_is"] == "sft"
    acc = moved["figures"]["accuracy"]
    assert acc["before"]["value"] == 0.5 and acc["after"]["value"] == 1.0
    assert acc["difference"]["low"] > 0 and acc["difference"]["value"] == 0.5
    assert moved["figures"]["margin"]["difference"]["low"] == moved["figures"]["margin"]["difference"]["high"] == 2.0
    # One flipped pair in 40 is within the noise: the interval of the difference holds 0.
    one = {"accuracy": [1.0] + before["accuracy"][1:], "margin": before["margin"]}
    assert not compare(before, one, before_is="sft")["changed"]
    json.dumps(moved)  # goes into the *_report.json as it is


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.integers(0, 30), min_size=1, max_size=60), fraction=st.floats(0.05, 0.9),
       seed=st.integers(0, 5), order_seed=st.integers(0, 1000))
def test_held_out_split_is_seeded_grouped_and_independent_of_order(keys, fraction, seed, order_seed):
    items = [(k, i) for i, k in enumerate(keys)]  # several items may share a prompt (key)
    kept, held = split_held_out(items, lambda x: x[0], fraction, seed)
    assert sorted(kept + held) == sorted(items)
    assert not {k for k, _ in kept} & {k for k, _ in held}  # a prompt's items stay together
    distinct = len(set(keys))
    assert len({k for k, _ in held}) == (max(1, round(fraction * distinct)) if distinct > 1 else 0)
    shuffled = list(items)
    torch.manual_seed(order_seed)
    shuffled = [shuffled[i] for i in torch.randperm(len(shuffled)).tolist()]
    _, held_again = split_held_out(shuffled, lambda x: x[0], fraction, seed)
    assert {k for k, _ in held_again} == {k for k, _ in held}  # the same prompts, whatever the file order


def test_prompt_split_holds_out_distinct_prompts_and_takes_eval_files(sft_neox, tmp_path):
    from transformers import AutoTokenizer

    from kotune.preference.config import PromptDataConfig
    from kotune.preference.pairs import prepare_prompts

    records = [{"prompt": f"질문 {i % 20}번"} for i in range(30)]  # 20 distinct prompts, 10 repeated
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    quiet = dict(log=lambda *_: None)
    tok = AutoTokenizer.from_pretrained(sft_neox)
    train, held, report = prepare_prompts(PromptDataConfig(files=[str(path)], eval_fraction=0.25), tok, 3, **quiet)
    assert len({tuple(ids) for _, ids in held}) == 5 and len(train) + len(held) == 30
    assert not {tuple(ids) for _, ids in train} & {tuple(ids) for _, ids in held}
    assert (report["prompts"], report["eval_prompts"]) == (len(train), len(held))
    again = prepare_prompts(PromptDataConfig(files=[str(path)], eval_fraction=0.25), tok, 3, **quiet)
    assert [ids for _, ids in again[1]] == [ids for _, ids in held]  # the same split on a rerun
    given_eval = tmp_path / "eval.json"
    given_eval.write_text(json.dumps([{"prompt": "따로 둔 질문"}], ensure_ascii=False), encoding="utf-8")
    train, held, _ = prepare_prompts(PromptDataConfig(files=[str(path)], eval_files=[str(given_eval)]), tok, 3, **quiet)
    assert len(train) == 30 and [m[-1].content for m, _ in held] == ["따로 둔 질문"]
    assert math.isclose(PromptDataConfig().eval_fraction, 0.1)  # held out by default
