"""PII masking: Korean resident registration numbers, phone numbers and e-mail addresses become placeholders."""

from hypothesis import given
from hypothesis import strategies as st

from kotune.corpus.config import PiiConfig
from kotune.corpus.pii import KoreanPiiMasker, mask_pii

KINDS = ["resident_number", "phone", "email"]


def test_each_kind_is_masked_and_counted():
    text = ("제 주민번호는 900101-1234567이고 전화는 010-1234-5678, 사무실은 02)123-4567, 해외에서는 +82 10 9876 5432, "
            "메일은 문의hong.gil@naver.com으로 주세요.")
    masked, counts = mask_pii(text, KINDS)
    assert counts == {"resident_number": 1, "phone": 3, "email": 1}
    assert masked == ("제 주민번호는 <주민번호>이고 전화는 <전화번호>, 사무실은 <전화번호>, 해외에서는 <전화번호>, "
                      "메일은 문의<이메일>으로 주세요.")


def test_numbers_that_are_not_pii_are_kept():
    text = "고객센터 1588-1234, 날짜 2023-01-01, 가격 12,345,678원, 잘못된 날짜 901301-1234567, 계좌 123456-12345678"
    assert mask_pii(text, KINDS) == (text, {k: 0 for k in KINDS})


def test_kinds_switched_off_are_kept():
    masker = KoreanPiiMasker(PiiConfig(phone=False))
    assert masker.format("010-1234-5678 a@b.kr") == "010-1234-5678 <이메일>"


@given(st.sampled_from(["010", "011", "016", "02", "031", "051", "064", "070"]), st.integers(100, 9999),
       st.integers(0, 9999), st.sampled_from(["-", " ", ".", ""]), st.sampled_from(["연락처 ", "전화:", "(", "번호는 "]),
       st.sampled_from(["입니다.", "로 연락", ")", ""]))
def test_any_korean_phone_number_is_masked(prefix, middle, last, sep, before, after):
    number = f"{prefix}{sep}{middle}{sep}{last:04d}"
    masked, counts = mask_pii(before + number + after, ["phone"])
    assert counts["phone"] == 1 and masked == before + "<전화번호>" + after
