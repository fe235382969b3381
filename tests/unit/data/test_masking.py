"""Masking on every shipped example: prompt tokens are -100 and each trained span decodes to reply + EOS.

Runs for both tiny architectures (GPT-NeoX with pad == eos like polyglot-ko, and LLaMA with BOS) and every
built-in template.
"""

import pytest
from transformers import AutoTokenizer

from kotune_test_paths import SAMPLES
from kotune.data.loading import load_examples
from kotune.data.templates import BUILTIN_TEMPLATES, install_template
from kotune.data.tokenize import IGNORE_INDEX, render_segments, tokenize_conversations

SHIPPED_SFT = [SAMPLES / "koalpaca_v1.0.sample.json", SAMPLES / "kochatgpt_conversation.sample.txt"]


@pytest.fixture(scope="module")
def conversations():
    return load_examples([str(p) for p in SHIPPED_SFT]).examples


def trained_runs(labels):
    runs, current = [], []
    for label in labels:
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
                current = []
        else:
            current.append(label)
    return runs + ([current] if current else [])


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
@pytest.mark.parametrize("template", sorted(BUILTIN_TEMPLATES))
def test_every_shipped_example_trains_exactly_reply_plus_eos(tiny_models, conversations, arch, template):
    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    install_template(tok, template)
    examples = tokenize_conversations(tok, conversations, max_length=None)
    for conv, ex in zip(conversations, examples):
        assert len(ex.input_ids) == len(ex.labels)
        replies = [m.content for m in conv.messages if m.role == "assistant"]
        runs = trained_runs(ex.labels)
        assert [tok.decode(r) for r in runs] == [reply + tok.eos_token for reply in replies], ex.source
        # Every untrained position is a prompt token: the labels are the ids where trained, -100 elsewhere.
        assert all(label in (IGNORE_INDEX, token) for token, label in zip(ex.input_ids, ex.labels))
        # The whole sequence is what apply_chat_template renders at serving time.
        rendered = tok.apply_chat_template(conv.as_dicts() if "['input']" in tok.chat_template
                                           else [m.flatten_input().as_dict() for m in conv.messages], tokenize=False)
        assert tok.decode(ex.input_ids) == rendered


def test_pad_equal_to_eos_does_not_hide_eos(tiny_neox, conversations):
    tok = AutoTokenizer.from_pretrained(tiny_neox)
    assert tok.pad_token_id == tok.eos_token_id  # like polyglot-ko: the case that breaks id-comparison masking
    install_template(tok, "koalpaca")
    (ex,) = tokenize_conversations(tok, conversations[:1], max_length=None)
    assert ex.labels[-1] == tok.eos_token_id


# KoAlpaca-Polyglot-12.8B's PROMPT_TEMPLATE, copied from its training code (the Polyglot-12.8b-KoAlpaca-SFT notes)
# without the code block's indentation; written out here, not taken from kotune, so a typo in kotune's text fails.
ORIGINAL_PROMPT_INPUT = """Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n
아래는 작업을 설명하는 명령어와 추가적 맥락을 제공하는 입력이 짝을 이루는 예제입니다. 요청을 적절히 완료하는 응답을 작성하세요.\n\n
### Instruction(명령어):\n{instruction}\n\n
### Input(입력):\n{input}\n\n
### Response(응답):\n"""
ORIGINAL_PROMPT_NO_INPUT = """Below is an instruction that describes a task. Write a response that appropriately completes the request.\n
아래는 작업을 설명하는 명령어입니다. 명령어에 따른 요청을 적절히 완료하는 응답을 작성하세요.\n\n
### Instruction(명령어):\n{instruction}\n\n
### Response(응답):\n"""


def test_koalpaca_template_is_the_original_koalpaca_text_byte_for_byte(tiny_neox, conversations):
    tok = AutoTokenizer.from_pretrained(tiny_neox)
    install_template(tok, "koalpaca")
    with_input = next(c for c in conversations if c.messages[0].input)
    without = next(c for c in conversations if not c.messages[0].input)
    for conv in (with_input, without):
        user, reply = conv.messages
        template = ORIGINAL_PROMPT_INPUT if user.input else ORIGINAL_PROMPT_NO_INPUT
        expected = template.format(instruction=user.content, input=user.input) + reply.content + tok.eos_token
        assert tok.apply_chat_template(conv.as_dicts(), tokenize=False) == expected
        prompt = tok.apply_chat_template(conv.as_dicts()[:1], tokenize=False, add_generation_prompt=True)
        assert prompt == template.format(instruction=user.content, input=user.input)


def test_llama_bos_is_in_the_template_text(tiny_llama, conversations):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    install_template(tok, "ko_chat")
    (ex,) = tokenize_conversations(tok, conversations[:1], max_length=None)
    assert ex.input_ids[0] == tok.bos_token_id and ex.input_ids.count(tok.bos_token_id) == 1
    ids = tok.apply_chat_template(conversations[0].as_dicts(), tokenize=True, return_dict=False)
    assert list(ids) == ex.input_ids


def test_truncation_keeps_the_prompt_start(tiny_neox, conversations):
    tok = AutoTokenizer.from_pretrained(tiny_neox)
    install_template(tok, "ko_chat")
    full = tokenize_conversations(tok, conversations[:20], max_length=None)
    cut = tokenize_conversations(tok, conversations[:20], max_length=24)
    for f, c in zip(full, cut):
        assert c.input_ids == f.input_ids[:24] and c.labels == f.labels[:24]
        assert c.truncated == (len(f.input_ids) > 24)


def test_segments_concatenate_to_the_rendered_text(tiny_neox, conversations):
    tok = AutoTokenizer.from_pretrained(tiny_neox)
    install_template(tok, "ko_chat")
    multi = conversations[-1]
    segments = render_segments(tok, multi)
    assert "".join(t for t, _ in segments) == tok.apply_chat_template(multi.as_dicts(), tokenize=False)
    assert [t for t, trained in segments if trained] == [m.content + tok.eos_token for m in multi.messages if m.role == "assistant"]
