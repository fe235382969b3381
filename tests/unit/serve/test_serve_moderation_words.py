"""`words:FILE` moderation and the term matcher under it: normalisation (NFKC variants, case), Hangul inside
words, English whole words, regexes, exceptions, and errors that name the file and line."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kotune.common.terms import TermMatcher, normalize
from kotune.serve.config import ServeConfig, split_specs
from kotune.serve.moderation import WordsCheck

WORDS = """# test list
[hate]
바보
idiot
re:씨\\s*발
!바보상자
[violence]
죽여
"""

hangul = st.integers(0xAC00, 0xD7A3).map(chr)
hangul_text = st.text(hangul, max_size=6)


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text(WORDS, encoding="utf-8")
    return WordsCheck(path)


def flagged(check: WordsCheck, text: str) -> list[str]:
    (verdict,) = check.check([text])
    assert verdict.flagged == bool(verdict.flagged_categories)
    return verdict.flagged_categories


def fullwidth(text: str) -> str:
    """ASCII letters as their full-width forms (what an IME or a copy from a PDF can give)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@settings(max_examples=60, deadline=None)
@given(before=hangul_text, after=hangul_text)
def test_hangul_term_matches_inside_words_in_any_normal_form(words, before, after):
    text = before + "바보" + after
    assume("바보상자" not in text)  # the exception: blanked out (the test below covers it)
    for form in ("NFC", "NFD", "NFKD"):
        assert flagged(words, unicodedata.normalize(form, text)) == ["hate"], form


@settings(max_examples=60, deadline=None)
@given(case=st.lists(st.booleans(), min_size=5, max_size=5), width=st.booleans(), plural=st.booleans(),
       around=st.sampled_from(["{} 저리 가", "you {}!", "({})", "{}"]))
def test_english_term_matches_whole_words_in_any_case_and_width(words, case, width, plural, around):
    word = "".join(c.upper() if up else c for c, up in zip("idiot", case)) + ("s" if plural else "")
    word = fullwidth(word) if width else word
    assert flagged(words, around.format(word)) == ["hate"]
    assert flagged(words, around.format(word + "ic")) == []  # not inside another English word
    assert flagged(words, around.format("x" + word)) == []


def holds_no_term(text: str) -> bool:
    """`text` with the exception blanked out holds none of WORDS' terms (an independent plain reading)."""
    text = text.replace("바보상자", " ")
    return "바보" not in text and "죽여" not in text and not re.search(r"씨\s*발", text)


@settings(max_examples=60, deadline=None)
@given(before=hangul_text, after=hangul_text)
def test_exception_allows_a_word_holding_a_term(words, before, after):
    text = f"{before} 바보상자{after}"
    assume(holds_no_term(text))
    assert flagged(words, text) == []
    assert flagged(words, f"{text} 바보") == ["hate"]  # the exception does not hide a real hit


@settings(max_examples=40, deadline=None)
@given(spaces=st.text(" \t", max_size=3), prefix=hangul_text)
def test_regex_searches_the_normalised_text(words, spaces, prefix):
    assume(holds_no_term(prefix))
    for form in ("NFC", "NFD"):  # the pattern is written composed; decomposed text meets it once normalised
        assert flagged(words, unicodedata.normalize(form, f"{prefix}씨{spaces}발")) == ["hate"], form


def test_categories_are_reported_each(words):
    assert flagged(words, "바보 죽여") == ["hate", "violence"]
    (verdict,) = words.check(["안녕하세요"])
    assert verdict.categories == {"hate": False, "violence": False} and not verdict.flagged


def test_matcher_normalises_its_terms_too():
    matcher = TermMatcher([fullwidth("Spam"), unicodedata.normalize("NFD", "사진")], ["사진작가"])
    assert matcher.find("SPAM mail") == "spam"
    assert matcher.find("가족사진을") == "사진" and matcher.find("사진작가입니다") is None
    assert normalize("ﾊﾝｶｸ") == "ハンカク"


def test_bad_regex_names_file_and_line(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("바보\n\nre:(unclosed\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"w\.txt:3: '\(unclosed' is not a regular expression"):
        WordsCheck(path)
    path.write_text("# only comments\n!예외\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no words or patterns"):
        WordsCheck(path)


def test_specs_split_on_commas_and_are_checked():
    assert split_specs(["openai,words:a.txt", "model:m"]) == ["openai", "words:a.txt", "model:m"]
    assert split_specs(["words:a,b.txt"]) == ["words:a,b.txt"]  # a comma inside a path stays there
    for bad in (["words:"], ["openai2"], ["model"]):
        with pytest.raises(ValueError, match="not a moderation spec"):
            split_specs(bad)
    with pytest.raises(ValueError, match="moderation_threshold"):
        ServeConfig(model="m", moderation_threshold=0)


def test_a_bad_spec_fails_before_the_model_loads(tmp_path, monkeypatch):
    from kotune.serve.moderation import build_checks

    with pytest.raises(ValueError, match="cannot read it"):
        build_checks(ServeConfig(model="m", moderation=[f"words:{tmp_path / 'missing.txt'}"]))
    with pytest.raises(ValueError, match="no such folder"):
        build_checks(ServeConfig(model="m", moderation=[f"model:{tmp_path / 'missing'}"]))
    monkeypatch.delenv("KOTUNE_TEST_NO_KEY", raising=False)
    with pytest.raises(ValueError, match=r"\$KOTUNE_TEST_NO_KEY is not set"):
        build_checks(ServeConfig(model="m", moderation=["openai"], moderation_api_key_env="KOTUNE_TEST_NO_KEY"))
