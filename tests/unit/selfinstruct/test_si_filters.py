"""Korean filters: each rejection has its reason; instructions Alpaca's English rules wrongly drop pass."""

import pytest

from kotune.selfinstruct.config import FilterConfig
from kotune.selfinstruct.filters import TaskFilter
from kotune.selfinstruct.prompt import Task

FILTER = TaskFilter(FilterConfig())


def reason(instruction, output="좋은 답입니다.", task_input=""):
    return FILTER.reason(Task(instruction, task_input, output))


@pytest.mark.parametrize("instruction", [
    "한국의 전통 명절 세 가지를 설명해 주세요.",  # starts with Hangul: Alpaca's isascii() rule drops this
    "'봄'을 주제로 짧은 시를 써 주세요.",  # an opening quote is not stray punctuation
    "「소나기」의 줄거리를 요약하세요.",
    "지도자에게 필요한 자질은 무엇인가요?",  # 지도자 (leader) is not 지도 (map)
    "지도 학습과 비지도 학습의 차이를 설명하세요.",
    "다음 Python 코드가 하는 일을 설명하세요.",  # some English is fine in a Korean instruction
    "이 문단을 paragraph 단위로 나누어 주세요.",  # "graph" only as a whole English word
])
def test_korean_instructions_pass(instruction):
    assert reason(instruction) is None


@pytest.mark.parametrize("instruction, expected", [
    ("시 써", "too_short"),
    ("짧다", "too_short"),  # one eojeol
    ("가" * 501 + " 설명", "too_long"),
    ("가족사진을 보고 느낀 점을 써 주세요.", "blacklist"),  # inside an eojeol, particle attached
    ("다음 데이터로 막대그래프를 만드세요.", "blacklist"),
    ("이 노래의 음악적 특징을 들려주세요.", "blacklist"),
    ("Draw a map of your neighbourhood, please.", "blacklist"),
    ("Explain the theory of relativity in simple words.", "not_korean"),
    ("- 다음 목록을 정리하세요.", "punctuation"),
    ("* 다음 목록을 정리하세요.", "punctuation"),
])
def test_rejections_name_their_rule(instruction, expected):
    assert reason(instruction) == expected


def test_empty_output_is_rejected():
    assert reason("좋아하는 계절을 설명하세요.", output="  ") == "empty_output"
    assert reason("좋아하는 계절을 설명하세요.", output="<nooutput>") == "empty_output"


def test_rules_follow_the_recipe():
    relaxed = TaskFilter(FilterConfig(min_hangul_ratio=0, blacklist=["사진"], blacklist_exceptions=["사진작가"],
                                      min_eojeol=1, min_chars=2))
    assert relaxed.reason(Task("Explain gravity to a child.", "", "ok")) is None
    assert relaxed.reason(Task("유명한 사진작가를 소개하세요.", "", "ok")) is None
    assert relaxed.reason(Task("사진을 설명하세요.", "", "ok")) == "blacklist"
    assert relaxed.reason(Task("짧다", "", "ok")) is None
