"""A Korean tokenizer trained from the shipped text round-trips Korean exactly and reloads with AutoTokenizer."""

import json

from transformers import AutoTokenizer

from kotune_test_paths import SAMPLES
from kotune.data.corpus import iter_documents
from kotune.models.tokenizer import tokenizer_stats
from kotune.pretrain.tokenizer import run
from kotune.pretrain.tokenizer_config import TokenizerConfig

KOREAN = ["안녕하세요, 반갑습니다! 오늘 날씨가 참 좋네요.", "빅데이터·AI 시대의 한국어 처리 — 띄어쓰기 없이도잘되나요?",
          "뷁 똠 햏 같은 드문 글자와 이모지 😀, English mixed 123."]


def test_trained_tokenizer_round_trips_and_reports(tmp_path):
    out = tmp_path / "tok"
    logged = []
    cfg = TokenizerConfig(corpus=[str(SAMPLES / "chatbotdata_ko.txt")], vocab_size=3000, out=str(out), style="llama")
    report = run(cfg, log=logged.append)
    tok = AutoTokenizer.from_pretrained(out)
    for text in KOREAN:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok("가")["input_ids"][0] == tok.bos_token_id  # llama style prepends <s>
    saved = json.loads((out / "tokenizer_report.json").read_text())
    assert saved["kotune"]["korean_chars_per_token"] > 1.0  # merges cover common syllables and more
    assert 0 <= saved["kotune"]["byte_fallback_rate"] < 0.2
    assert saved == report and any("Korean chars/token" in line for line in logged)


def test_compare_reports_both_on_the_same_slice(tmp_path, tiny_neox):
    cfg = TokenizerConfig(corpus=[str(SAMPLES / "chatbotdata_ko.txt")], vocab_size=600, out=str(tmp_path / "small"),
                          compare=str(tiny_neox))
    report = run(cfg, log=lambda *_: None)
    assert report["compare"]["documents"] == report["kotune"]["documents"] == report["held_out_documents"]
    # A 600-token vocabulary covers far fewer syllables than the 2,000-token one it is compared with.
    assert report["kotune"]["byte_fallback_rate"] > report["compare"]["byte_fallback_rate"]


def test_byte_fallback_is_counted(tiny_neox):
    tok = AutoTokenizer.from_pretrained(tiny_neox)
    rare = tokenizer_stats(tok, ["뷁똠햏쀍"])
    common = tokenizer_stats(tok, ["안녕하세요"])
    assert rare["byte_fallback_rate"] > common["byte_fallback_rate"]


def test_corpus_reader_streams_every_format(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "첫 문서"}\n\n{"instruction": "질문", "input": "", "output": "답"}\n', encoding="utf-8")
    txt = tmp_path / "p.txt"
    txt.write_text("\ufeff첫 문단\n둘째 줄\n\n둘째 문단\n", encoding="utf-8")
    assert list(iter_documents([jsonl])) == ["첫 문서", "질문\n답"]
    assert list(iter_documents([txt], unit="paragraph")) == ["첫 문단\n둘째 줄", "둘째 문단"]
    assert list(iter_documents([txt])) == ["첫 문단", "둘째 줄", "둘째 문단"]
