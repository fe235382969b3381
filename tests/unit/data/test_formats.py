"""Every input format becomes the internal schema; detection picks the right converter."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kotune_test_paths import conversational_pairs

from kotune.data.formats import FORMATS, detect_format, parse_kochatgpt_conversations
from kotune.data.loading import load_examples
from kotune.data.schema import Conversation, DataError, Message, PreferencePair


def write(tmp_path, name, obj):
    path = tmp_path / name
    if isinstance(obj, str):
        path.write_text(obj, encoding="utf-8")
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in obj), encoding="utf-8")
    else:
        path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "record, name",
    [
        ({"instruction": "색을 말해줘", "input": "", "output": "빨강"}, "alpaca"),
        ({"instruction": "색을 말해줘", "output": "빨강", "url": "https://kin.naver.com/x"}, "koalpaca_v1.1"),
        ({"conversations": [{"from": "human", "value": "안녕"}, {"from": "gpt", "value": "안녕하세요"}]}, "sharegpt"),
        ({"messages": [{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "네"}]}, "openai"),
        ({"prompt": "안녕", "completion": "네", "tokens": 3}, "kochatgpt_sft"),
        ({"prompt": "질문", "completion_0": "a", "completion_1": "b", "completion_2": "c", "ranking": [1, 0, 2]}, "kochatgpt_rm"),
        ({"id": "x", "prompt": "질문", "chosen": "좋은 답", "rejected": "나쁜 답"}, "preference"),
        ({"prompt": "질문만"}, "prompts"),
    ],
)
def test_detects_every_format(record, name):
    assert detect_format(record).name == name


def test_alpaca_keeps_input_separate(tmp_path):
    path = write(tmp_path, "a.json", [{"instruction": "번역하세요", "input": "Hello", "output": "안녕하세요"}])
    (conv,) = load_examples([path]).examples
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[0].content == "번역하세요" and conv.messages[0].input == "Hello"
    assert conv.messages[0].flatten_input().content == "번역하세요\n\nHello"
    assert conv.source.line == 2


def test_sharegpt_multi_turn_with_system(tmp_path):
    rec = {"conversations": [{"from": "system", "value": "친절하게"}, {"from": "human", "value": "안녕"},
                             {"from": "gpt", "value": "안녕하세요"}, {"from": "human", "value": "이름?"}, {"from": "gpt", "value": "코튠"}]}
    (conv,) = load_examples([write(tmp_path, "s.jsonl", [rec])]).examples
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "user", "assistant"]


def test_kochatgpt_rm_ranking_gives_every_ordered_pair(tmp_path):
    # ranking[i] is the rank of completion_i (0 = best): completion_1 > completion_0 > completion_2
    rec = {"prompt": "질문", "completion_0": "보통", "completion_1": "최고", "completion_2": "최악", "ranking": [1, 0, 2]}
    pairs = load_examples([write(tmp_path, "rm.jsonl", [rec])], kind="preference").examples
    assert {(p.chosen, p.rejected) for p in pairs} == {("최고", "보통"), ("최고", "최악"), ("보통", "최악")}
    assert all(isinstance(p, PreferencePair) for p in pairs)


def test_preference_strips_literal_eos_and_reports_empty_side(tmp_path):
    path = write(tmp_path, "p.json", [
        {"prompt": "질문", "chosen": "좋은 답<|endoftext|>", "rejected": "나쁜 답<|endoftext|>"},
        {"prompt": "질문", "chosen": "좋은 답<|endoftext|>", "rejected": "\u200b<|endoftext|>"},
        {"prompt": "질문", "chosen": "같은 답", "rejected": "같은 답"},
    ])
    result = load_examples([path], kind="preference", skip_invalid=True)
    assert [(p.chosen, p.rejected) for p in result.examples] == [("좋은 답", "나쁜 답")]
    assert sorted((p.line, p.field, p.kind) for p in result.problems) == [
        (7, "rejected", "empty"), (12, "rejected", "identical_pair")]


def test_kochatgpt_conversation_text():
    text = "<<start conversation>>\n<사람>: 안녕?\n<챗봇>: 안녕하세요.\n둘째 줄\n<사람>: 뭐해?\n<챗봇>: 대화해요.\n\n<<start conversation>>\n<사람>: 질문만\n"
    convs, errors = parse_kochatgpt_conversations(text, "k.txt")
    assert len(convs) == 1 and convs[0].source.line == 1
    assert convs[0].messages[1].content == "안녕하세요.\n둘째 줄"
    assert [(line, e.kind) for line, e in errors] == [(8, "turns")]


def test_shipped_samples_load_without_problems(tmp_path):
    from kotune_test_paths import SAMPLES

    sft = load_examples([str(SAMPLES / "koalpaca_v1.0.sample.json"), str(SAMPLES / "kochatgpt_conversation.sample.txt")])
    assert len(sft.examples) == 2060 and all(isinstance(c, Conversation) for c in sft.examples)
    prompts = load_examples([str(SAMPLES / "kochatgpt_ppo_prompts.sample.json")], kind="prompts")
    assert len(prompts.examples) == 200


def test_wrong_kind_is_an_error(tmp_path):
    path = write(tmp_path, "p.json", [{"prompt": "질문", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="preference data, this stage needs sft data"):
        load_examples([path], kind="sft")


def test_forced_format_overrides_detection(tmp_path):
    path = write(tmp_path, "p.jsonl", [{"prompt": "질문", "completion": "답"}])
    with pytest.raises(DataError, match="instruction: missing"):
        load_examples([path], format="alpaca")
    assert set(FORMATS) >= {"alpaca", "koalpaca_v1.1", "sharegpt", "openai", "kochatgpt_sft", "kochatgpt_conversation",
                            "kochatgpt_rm", "preference"}


def test_sharegpt_top_level_system_and_role_content_turns(tmp_path):
    """LLaMA-Factory's layout: a top-level `system`, and turns written as {role, content} inside `conversations`."""
    records = [
        {"system": "존댓말로 답하세요.", "conversations": [{"from": "human", "value": "안녕"}, {"from": "gpt", "value": "안녕하세요"}]},
        {"conversations": [{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "네"}]},
        {"system": "", "conversations": [{"from": "human", "value": "안녕"}, {"from": "gpt", "value": "네"}]},
    ]
    convs = load_examples([write(tmp_path, "s.jsonl", records)]).examples
    assert convs[0].messages[0] == Message("system", "존댓말로 답하세요.")
    assert [m.role for m in convs[0].messages] == ["system", "user", "assistant"]
    assert [(m.role, m.content) for m in convs[1].messages] == [("user", "안녕"), ("assistant", "네")]
    assert [m.role for m in convs[2].messages] == ["user", "assistant"]  # a blank system is no system message


def test_sharegpt_turn_and_system_problems_are_precise(tmp_path):
    records = [
        {"conversations": [{"speaker": "user", "text": "안녕"}]},
        {"conversations": [{"role": "tool", "content": "x"}]},
        {"system": "a", "conversations": [{"from": "system", "value": "b"}, {"from": "human", "value": "c"},
                                          {"from": "gpt", "value": "d"}]},
    ]
    result = load_examples([write(tmp_path, "s.jsonl", records)], skip_invalid=True)
    assert [(p.line, p.field) for p in result.problems] == [(1, "conversations[0]"), (2, "conversations[0].role"),
                                                            (3, "system")]
    assert "expected {from, value} or {role, content}, got keys ['speaker', 'text']" in str(result.problems[0])
    assert "unknown role 'tool'" in str(result.problems[1])


def test_fields_a_format_does_not_use_are_reported_per_record_with_a_count(tmp_path, capsys):
    from kotune.data.check import run as check

    records = [
        {"id": 1, "tools": "[]", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b", "weight": 0}]},
        {"id": 2, "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
    ]
    path = write(tmp_path, "s.jsonl", records)
    result = load_examples([path])
    assert result.ignored == {"id": [f"{path}:1", f"{path}:2"], "tools": [f"{path}:1"],
                              "conversations[].weight": [f"{path}:1"]}
    lines = []
    assert check([path], out=lines.append) == 0  # ignored fields are reported, not problems
    text = "\n".join(lines)
    assert "ignored fields: 3" in text and f"id: in 2 record(s), not used ({path}:1, {path}:2)" in text
    assert "tools: in 1 record(s)" in text and "conversations[].weight: in 1 record(s)" in text


def test_preference_pairs_carry_their_chat_context_in_every_layout(tmp_path):
    records = conversational_pairs()
    assert [detect_format(r).name for r in records] == ["preference", "preference", "sharegpt_preference"]
    pairs = [load_examples([write(tmp_path, f"p{i}.jsonl", [r])], kind="preference").examples[0]
             for i, r in enumerate(records)]
    expected = (Message("system", "친절하게 답하세요."), Message("user", "안녕?"), Message("assistant", "안녕하세요!"),
                Message("user", "오늘 날씨 어때?"))
    for pair in pairs:
        assert (pair.prompt, pair.chosen, pair.rejected) == (expected, "맑고 따뜻해요.", "몰라.")


def test_conversational_pair_problems_name_the_field(tmp_path):
    good = conversational_pairs()
    records = [
        {**good[0], "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
        {**good[0], "prompt": good[0]["prompt"][:3]},  # ends with the assistant turn: nothing to answer
        {"chosen": good[1]["chosen"], "rejected": [{"role": "user", "content": "다른 질문"}, *good[1]["rejected"][2:]]},
        {"chosen": "a", "rejected": "b"},
    ]
    result = load_examples([write(tmp_path, "p.jsonl", records)], kind="preference", skip_invalid=True)
    assert [(p.line, p.field, p.kind) for p in result.problems] == [
        (1, "chosen", "turns"), (2, "prompt", "turns"), (3, "chosen", "turns"), (4, "prompt", "missing_field")]


def test_prompts_may_be_conversations(tmp_path):
    msgs = conversational_pairs()[0]["prompt"]
    (conv,) = load_examples([write(tmp_path, "q.jsonl", [{"prompt": msgs}])], kind="prompts").examples
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "user"]


def test_a_missing_file_is_reported_as_a_file_not_as_an_invalid_record(tmp_path):
    with pytest.raises(DataError) as caught:
        load_examples([str(tmp_path / "nope.json")])
    assert str(caught.value).startswith("cannot read 1 data file(s) (check data.files):")
    assert f"{tmp_path / 'nope.json'}: No such file or directory" in str(caught.value)
    assert "invalid record" not in str(caught.value) and ":0" not in str(caught.value)


_EXTRA = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(top=st.sets(_EXTRA, max_size=4), turn=st.sets(_EXTRA, max_size=3), layout=st.sampled_from(["from", "role"]))
def test_every_key_a_format_does_not_use_is_named_and_the_rest_trains_unchanged(top, turn, layout):
    """Whatever extra keys a ShareGPT record carries, at the top or in its turns, exactly those are reported, and
    the conversation is the one the record without them gives."""
    from kotune.data.formats import TURN_KEYS, ignored_fields
    from kotune.data.schema import Source

    top -= {"conversations", "system"}
    turn -= TURN_KEYS
    keys = ("from", "value") if layout == "from" else ("role", "content")
    roles = ("human", "gpt") if layout == "from" else ("user", "assistant")
    plain = {"system": "짧게", "conversations": [{keys[0]: r, keys[1]: t} for r, t in zip(roles, ("안녕", "네"))]}
    extra = {**plain, **{k: 1 for k in top},
             "conversations": [{**t, **{k: 0 for k in turn}} for t in plain["conversations"]]}
    fmt = FORMATS["sharegpt"]
    assert sorted(ignored_fields(fmt, extra)) == sorted([*top, *(f"conversations[].{k}" for k in turn)])
    assert ignored_fields(fmt, plain) == []
    assert fmt.convert(extra, Source("f", 1)) == fmt.convert(plain, Source("f", 1))
