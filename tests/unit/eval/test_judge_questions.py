"""The shipped Korean question set, the question reader's errors, and the verdict parser."""

import json
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kotune.data.schema import DataError
from kotune.eval.judge_data import CATEGORIES, NEEDS_REFERENCE, default_questions, load_questions
from kotune.eval.judge_prompt import judge_prompt, parse_verdict
from kotune.eval.judge_score import outcome


def test_the_shipped_set_covers_every_category_with_references_where_needed():
    questions = load_questions(default_questions())
    counts = Counter(q.category for q in questions)
    assert len(questions) >= 80 and set(counts) == set(CATEGORIES) and min(counts.values()) >= 10
    for q in questions:
        text = q.messages[-1]["content"]
        assert len(re.findall(r"[가-힣]", text)) >= 10, q.id  # written in Korean
        assert (q.reference is not None) == (q.category in NEEDS_REFERENCE), q.id
    texts = [q.messages[-1]["content"] for q in questions]
    assert len(set(texts)) == len(texts) and len({q.id for q in questions}) == len(questions)


def test_bad_question_records_are_listed_with_file_line_and_field(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join([json.dumps({"id": "a", "prompt": "좋은 질문"}, ensure_ascii=False),
                               json.dumps({"id": "b", "prompt": "참고 답안", "reference": 7}, ensure_ascii=False),
                               json.dumps({"id": "a", "prompt": "같은 id"}, ensure_ascii=False),
                               json.dumps({"id": "c", "messages": [{"role": "user"}]}),
                               "{not json"]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_questions(path)
    message = str(e.value)
    for line, field in [(2, "reference"), (3, "id"), (4, "messages[0]"), (5, "")]:
        assert f"{path}:{line}: {field}" in message
    assert f"{path}:1:" not in message


@pytest.mark.parametrize("reply, verdict", [
    ("A가 더 정확합니다.\n[[A]]", "A"), ("판정: [[ B ]]", "B"), ("비슷합니다 [[C]]", "tie"),
    ("[[A]] ... 다시 보니 [[B]]", None), ("A가 낫다", None), ("", None), (None, None), ("[[A]] 최종: [[A]]", "A"),
    ("[A]", None), ("[[D]]", None)])
def test_verdicts_are_read_only_when_unambiguous(reply, verdict):
    assert parse_verdict(reply) == verdict


@settings(max_examples=60)
@given(st.text(max_size=40), st.sampled_from(["A", "B", "C"]), st.text(max_size=40))
def test_one_token_anywhere_in_any_text_is_the_verdict(before, token, after):
    noise = [s.replace("[", "") for s in (before, after)]
    assert parse_verdict(f"{noise[0]}[[{token}]]{noise[1]}") == {"A": "A", "B": "B", "C": "tie"}[token]


def test_both_orders_make_one_outcome():
    assert outcome("A", "B") == ("win", False) and outcome("B", "A") == ("loss", False)
    assert outcome("tie", "tie") == ("tie", False)
    assert outcome("A", "A") == ("tie", True) and outcome("A", "tie") == ("tie", True)  # position bias: a tie
    assert outcome(None, "A") == ("unparsed", False) and outcome("failed", None) == ("failed", False)


def test_the_prompt_shows_the_reference_only_where_there_is_one():
    chat = [{"role": "user", "content": "3 더하기 4는?"}]
    with_ref, without = judge_prompt(chat, "7", "8", "7입니다"), judge_prompt(chat, "7", "8")
    assert "[참고 답안 시작]\n7입니다" in with_ref and "참고 답안" not in without
    assert with_ref.index("[어시스턴트 A의 답변 시작]\n7\n") < with_ref.index("[어시스턴트 B의 답변 시작]\n8\n")
