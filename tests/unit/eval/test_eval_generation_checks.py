"""Generation checks on crafted Korean replies: loops are flagged, clean answers pass, numbers mean what they say."""

import json

import pytest

from kotune_test_paths import SAMPLES
from kotune.eval.generation_checks import (
    check_reply,
    distinct_n,
    is_looping,
    loop_score,
    repeated_ngram_rate,
    summarize,
)

# chatKoAlpaca.md's reply to "시카고 오헤어 국제공항은 어디에 있어?": one sentence restated with small changes until
# the token limit cut it off mid-word.
OHARE_LOOP = (
    "시카고 오헤어 국제공항은 미국 일리노이주 시카고 오헤어 국제공항에 위치해 있습니다.. 국제공항에서는 공항버스가 "
    "있습니다.시카고 오헤어 국제공항은 미국 시카고에 위치한 공항으로, 시카고에서 약 3시간 정도 소요됩니다.시카고 "
    "오헤어 국제공항은 미국의 시카고에 위치한 국제공항으로, 시카고에서 약 1시간 정도 소요됩니다.시카고 오헤어 "
    "국제공항은 미국 시카고에서 3시간 정도 소요됩니다.시카고 오헤어 국제공항은 미국 시카고 오헤어 국제공항에서 약 "
    "30분 정도 소요됩니다.시카고 오헤어 국제공항은 미국 일리노이주 시카고에 위치해 있"
)
OHARE_CLEAN = (
    "시카고 오헤어 국제공항은 미국 일리노이주 시카고 북서쪽에 있습니다. 시카고 도심에서 약 25km 떨어져 있으며, "
    "지하철 블루 라인을 타면 도심까지 40분 정도 걸립니다. 유나이티드 항공과 아메리칸 항공의 주요 허브 공항이라서 "
    "국내선과 국제선 환승객이 많고, 세계에서 가장 붐비는 공항 가운데 하나로 꼽힙니다."
)
CLEAN_LIST = (
    "된장찌개 끓이는 방법입니다.\n1. 멸치와 다시마로 육수를 10분 정도 우려냅니다.\n2. 된장 두 큰술을 체에 걸러 "
    "풀어 줍니다.\n3. 애호박, 양파, 감자를 한입 크기로 썰어 넣고 5분 끓입니다.\n4. 두부와 청양고추를 넣고 "
    "3분 더 끓인 뒤 대파를 올려 마무리합니다."
)
CLEAN_SHORT = "네, 맞습니다. 서울은 대한민국의 수도입니다."


@pytest.mark.parametrize("text", [
    OHARE_LOOP,
    "시카고 오헤어 국제공항은 미국 일리노이주 시카고에 위치해 있습니다. " * 6,
    CLEAN_SHORT + " " + "감사합니다! " * 20,  # a normal start, then stuck
    "ㅋ" * 120,  # loops without spaces still count
    "좋아요좋아요좋아요" * 10,
])
def test_looping_replies_are_flagged(text):
    assert is_looping(text)
    assert not check_reply(text, stopped=False, n_tokens=256).stopped


@pytest.mark.parametrize("text", [OHARE_CLEAN, CLEAN_LIST, CLEAN_SHORT, ""])
def test_clean_replies_pass(text):
    check = check_reply(text, stopped=True, n_tokens=60)
    assert not check.looping and check.stopped
    assert check.loop_score < 0.2


def test_a_short_reply_is_never_called_a_loop():
    # 30 characters of "네 네 네 …" is a bad reply but too short to tell a loop from a one-word answer
    assert loop_score("네 " * 15) > 0.8
    assert not is_looping("네 " * 15)


def test_no_false_alarms_on_real_answers():
    """The 2,000 KoAlpaca answers written by ChatGPT: the only one flagged is a truth table of T/F rows."""
    outputs = [r["output"] for r in json.loads((SAMPLES / "koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))]
    flagged = [o for o in outputs if is_looping(o)]
    assert len(flagged) <= 1, flagged[:3]


def test_repeated_ngram_rate_counts_repeats_of_earlier_ngrams():
    # 4-grams: (a b c d) (b c d a) (c d a b) (d a b c) (a b c d): the last repeats the first
    assert repeated_ngram_rate("a b c d a b c d", 4) == pytest.approx(1 / 5)
    assert repeated_ngram_rate("가 나 다 라 마", 4) == 0.0
    assert repeated_ngram_rate("가 나", 4) == 0.0  # no 4-gram at all
    assert repeated_ngram_rate("안녕 " * 50, 4) == pytest.approx(46 / 47)


def test_distinct_n_per_reply_and_pooled():
    assert distinct_n("사과 배 사과 배", 1) == pytest.approx(2 / 4)
    assert distinct_n("사과 배 사과 배", 2) == pytest.approx(2 / 3)
    # pooled over replies: two prompts answered with the same text halve distinct-1
    assert distinct_n(["사과 배 감", "사과 배 감"], 1) == pytest.approx(3 / 6)
    assert distinct_n("", 1) is None


def test_summary_rates_and_means():
    texts = [OHARE_LOOP, OHARE_CLEAN, CLEAN_SHORT, ""]
    checks = [check_reply(OHARE_LOOP, False, 256), check_reply(OHARE_CLEAN, True, 80),
              check_reply(CLEAN_SHORT, True, 12), check_reply("", True, 0)]
    s = summarize(texts, checks)
    assert s["n"] == 4
    assert s["stop_rate"] == pytest.approx(3 / 4)
    assert s["looping"] == 1 and s["loop_rate"] == pytest.approx(1 / 4)
    assert s["empty"] == 1
    assert s["mean_tokens"] == pytest.approx((256 + 80 + 12) / 4)
    assert s["distinct_1"] == distinct_n(texts, 1)
    with pytest.raises(ValueError, match="2 texts but 1 checks"):
        summarize(texts[:2], checks[:1])
