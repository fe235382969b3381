"""Preference pairs and PPO prompts become exactly SFT's tokens; every dropped pair is counted with its reason."""

import json

import pytest
from kotune_test_paths import SAMPLES, conversational_pairs
from transformers import AutoTokenizer

from kotune.data.loading import load_examples
from kotune.data.schema import Conversation, DataError, Message, PreferencePair, Source
from kotune.data.templates import install_template
from kotune.data.tokenize import tokenize_conversations
from kotune.preference.config import PairDataConfig
from kotune.preference.pairs import TokenPair, prepare_pairs, prompt_ids, split_by_prompt, tokenize_pairs

MULTI_TURN = (Message("system", "친절하게 답하세요."), Message("user", "안녕?"), Message("assistant", "안녕하세요!"),
              Message("user", "오늘 날씨 어때?"))


def chat_tokenizer(path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    install_template(tokenizer, "ko_chat")
    return tokenizer


@pytest.fixture(params=["gpt-neox", "llama"])
def tok(request, tiny_models):
    return chat_tokenizer(tiny_models[request.param])


def test_pair_sequences_are_the_sft_tokens_of_prompt_plus_reply(tok):
    pair = PreferencePair(MULTI_TURN, "맑아요.", "몰라요.", Source("x.json", 1))
    (tp,), dropped, _ = tokenize_pairs(tok, [pair], max_length=512)
    assert not dropped
    for reply, seq, reply_ids in ((pair.chosen, tp.chosen_sequence, tp.chosen_ids),
                                  (pair.rejected, tp.rejected_sequence, tp.rejected_ids)):
        sft = tokenize_conversations(tok, [Conversation((*MULTI_TURN, Message("assistant", reply)))], None)[0]
        assert seq == sft.input_ids  # same ids as SFT, so the same masking, BOS and EOS
        assert reply_ids == sft.labels[-len(reply_ids):]  # the reply is the last trained span ...
        assert tok.decode(reply_ids) == reply + tok.eos_token  # ... and ends with EOS as in SFT
    # The earlier assistant turn is part of the prompt, and BOS (LLaMA) appears once.
    assert "안녕하세요!" in tok.decode(tp.prompt_ids)
    if tok.bos_token_id is not None and tok.bos_token != tok.eos_token:
        assert tp.prompt_ids.count(tok.bos_token_id) == 1


def test_ppo_prompts_are_the_prompt_ids_of_pairs_and_end_with_the_generation_prompt(tok):
    (ids,) = prompt_ids(tok, [MULTI_TURN])
    (tp,), _, _ = tokenize_pairs(tok, [PreferencePair(MULTI_TURN, "a", "b")], 512)
    assert ids == tp.prompt_ids
    assert tok.decode(ids) == tok.apply_chat_template([m.as_dict() for m in MULTI_TURN], tokenize=False,
                                                      add_generation_prompt=True)


def test_vaiv_sample_empty_and_identical_sides_are_reported_or_refused(tiny_neox, tmp_path):
    tok = chat_tokenizer(tiny_neox)
    records = json.loads((SAMPLES / "vaiv_preference.sample.json").read_text(encoding="utf-8"))[:40]
    records.append({"prompt": "같은 답", "chosen": "같아요.<|endoftext|>", "rejected": "같아요."})
    path = tmp_path / "vaiv.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    empty = sum(1 for r in records if not r["rejected"].replace("\u200b", "").replace("<|endoftext|>", "").strip())
    assert empty >= 1  # the VAIV export really has zero-width-only sides

    with pytest.raises(DataError, match=r"vaiv.json:\d+: rejected: empty"):
        prepare_pairs(PairDataConfig(files=[str(path)]), tok, seed=0, log=lambda *_: None)

    lines = []
    data = prepare_pairs(PairDataConfig(files=[str(path)], skip_invalid=True, max_length=2048), tok, 0, lines.append)
    assert data.report["skipped_records_per_kind"] == {"empty": empty, "identical_pair": 1}
    assert any("skipped pairs:" in line and f"empty {empty}" in line and "identical_pair 1" in line for line in lines)
    assert data.report["train_pairs"] + data.report["eval_pairs"] == len(records) - empty - 1
    assert len(data.report["skipped_records"]) == empty + 1  # each one listed with its file and line


def test_cut_pairs_keep_their_start_and_unusable_ones_are_counted(tiny_neox):
    tok = chat_tokenizer(tiny_neox)
    long_prompt = (Message("user", "아주 긴 질문 " * 60),)
    pairs = [
        PreferencePair((Message("user", "질문"),), "같은 시작 그리고 좋은 끝 " * 20, "같은 시작 그리고 나쁜 끝 " * 20, Source("p", 1)),
        PreferencePair(long_prompt, "네.", "아니요.", Source("p", 2)),
        PreferencePair((Message("user", "질문"),), "같은 시작 " * 30 + "가", "같은 시작 " * 30 + "나", Source("p", 3)),
    ]
    kept, dropped, lines = tokenize_pairs(tok, pairs, max_length=48)
    assert dropped == {"prompt_too_long": 1, "identical_after_truncation": 1}
    assert [line.split(":")[:2] for line in lines] == [["p", "2"], ["p", "3"]]
    (tp,) = kept
    assert tp.truncated and len(tp.chosen_sequence) == 48 and tp.chosen_ids != tp.rejected_ids


def test_held_out_split_keeps_all_pairs_of_a_prompt_together():
    # KoChatGPT rankings give several pairs per prompt; none of a held-out prompt may be trained on.
    pairs = [TokenPair([i], [1, i + j], [2, j]) for i in range(20) for j in range(3)]
    train, held = split_by_prompt(pairs, 0.25, seed=1)
    assert len(held) == 15 and len(train) == 45
    assert not {tuple(p.prompt_ids) for p in train} & {tuple(p.prompt_ids) for p in held}


def test_kochatgpt_rankings_give_every_ordered_pair(tiny_neox, tmp_path):
    tok = chat_tokenizer(tiny_neox)
    rec = {"prompt": "질문", "completion_0": "보통", "completion_1": "최고", "completion_2": "최악", "ranking": [1, 0, 2]}
    path = tmp_path / "rm.jsonl"
    path.write_text(json.dumps(rec, ensure_ascii=False) + "\n", encoding="utf-8")
    pairs = load_examples([str(path)], kind="preference").examples
    assert {(p.chosen, p.rejected) for p in pairs} == {("최고", "보통"), ("보통", "최악"), ("최고", "최악")}
    data = prepare_pairs(PairDataConfig(files=[str(path)], eval_fraction=0), tok, 0, lambda *_: None)
    assert data.report["train_pairs"] == 3 and data.report["records_per_format"] == {"kochatgpt_rm": 1}


def conversational_file(tmp_path, n=1):
    """Multi-turn pairs in TRL's conversational layout and LLaMA-Factory's ShareGPT layout, one file each."""
    trl, _, sharegpt = conversational_pairs()
    paths = []
    for name, rec in (("trl.jsonl", trl), ("sharegpt.jsonl", sharegpt)):
        (tmp_path / name).write_text("".join(json.dumps(rec, ensure_ascii=False) + "\n" for _ in range(n)), encoding="utf-8")
        paths.append(str(tmp_path / name))
    return paths


def test_multi_turn_pairs_differ_only_in_the_final_reply_and_mask_as_sft(tok, tmp_path):
    """A pair with a system message and an earlier exchange: chosen and rejected are SFT's tokens of the whole
    conversation, identical up to the final reply; the earlier assistant turn is prompt, not reply."""
    for path in conversational_file(tmp_path):
        (pair,) = load_examples([path], kind="preference").examples
        (tp,), dropped, _ = tokenize_pairs(tok, [pair], max_length=512)
        assert not dropped
        sides = []
        for reply, reply_ids, seq in ((pair.chosen, tp.chosen_ids, tp.chosen_sequence),
                                      (pair.rejected, tp.rejected_ids, tp.rejected_sequence)):
            sft = tokenize_conversations(tok, [Conversation((*pair.prompt, Message("assistant", reply)))], None)[0]
            assert seq == sft.input_ids  # rendered with the chat template exactly as SFT renders it
            trained = [i for i, label in enumerate(sft.labels) if label != -100]
            final = len(tp.prompt_ids)  # the final reply starts here and is SFT's last trained span
            assert sft.labels[final:] == reply_ids and tok.decode(reply_ids) == reply + tok.eos_token
            assert trained[0] < final  # SFT trains the earlier assistant turn; here it is part of the prompt
            sides.append(sft.input_ids)
        first_difference = next(i for i, (a, b) in enumerate(zip(*sides)) if a != b)
        assert first_difference >= len(tp.prompt_ids)  # nothing before the final reply differs
        prompt_text = tok.decode(tp.prompt_ids)
        assert "친절하게 답하세요." in prompt_text and "안녕하세요!" in prompt_text


def test_ppo_prompts_may_carry_a_conversation(tok, tmp_path):
    from kotune.preference.config import PromptDataConfig
    from kotune.preference.pairs import prepare_prompts

    prompt = [{"role": "system", "content": "짧게"}, {"role": "user", "content": "안녕?"},
              {"role": "assistant", "content": "네."}, {"role": "user", "content": "이름은?"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": prompt}, ensure_ascii=False) + "\n", encoding="utf-8")
    ((messages, ids),), held, _ = prepare_prompts(PromptDataConfig(files=[str(path)]), tok, 0, log=lambda *_: None)
    assert held == []  # one prompt: nothing to hold out
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert tok.decode(ids) == tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
