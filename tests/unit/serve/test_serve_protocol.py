"""Request bodies: what OpenAI clients send becomes what the chat template expects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kotune.serve.protocol import ChatCompletionRequest, CompletionRequest


def test_messages_become_template_dicts():
    req = ChatCompletionRequest(model="m", messages=[
        {"role": "developer", "content": "존댓말로 답하세요"},
        {"role": "user", "content": [{"type": "text", "text": "안녕"}, {"type": "text", "text": "하세요"}]},
    ])
    assert req.message_dicts() == [{"role": "system", "content": "존댓말로 답하세요"},
                                   {"role": "user", "content": "안녕하세요"}]


def test_stop_is_always_a_list():
    assert ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "a"}]).stop == []
    assert ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "a"}], stop="###").stop == ["###"]


def test_max_completion_tokens_wins_over_max_tokens():
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "a"}], max_tokens=5,
                                max_completion_tokens=7)
    assert req.requested_max_tokens() == 7


def test_non_text_content_parts_are_rejected():
    with pytest.raises(ValidationError, match="type"):
        image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ChatCompletionRequest(model="m", messages=[{"role": "user", "content": [image]}])


def test_completion_takes_exactly_one_prompt():
    assert CompletionRequest(model="m", prompt=["하나"]).prompt == "하나"
    with pytest.raises(ValidationError, match="exactly one prompt"):
        CompletionRequest(model="m", prompt=["하나", "둘"])
    with pytest.raises(ValidationError, match="echo"):
        CompletionRequest(model="m", prompt="a", echo=True)
