"""`kotune corpus` end to end on shipped Korean text: filters, exact and MinHash dedup, PII masking and token files;
1 worker against 2, a resumed run after a lost task, and `kotune pretrain` starting on the token files."""

import gzip
import json
import re
import shutil

import numpy as np
import pytest

from kotune.config import from_dict
from kotune.corpus.config import CorpusRecipe
from kotune.corpus.filters import korean_filters
from kotune.corpus.config import KoreanFilterConfig
from kotune.corpus.run import run
from kotune_test_paths import REPO

SAMPLE = REPO / "data" / "samples" / "koalpaca_v1.0.sample.json"
PII_SENTENCE = " 문의는 홍길동(900101-1234567)에게 010-1234-5678 또는 hong@example.co.kr 로 연락하세요."
BAD = {  # crafted documents, each failing one Korean filter
    "bad-english": ("This page is written entirely in English and has no Korean at all.", "hangul_share"),
    "bad-short": ("안녕하세요.", "too_short"),
    "bad-url": ("자료 https://example.com/a/b/c/d/e/f/g/h https://example.org/x/y/z/1/2/3/4/5 참고하세요.", "url_ratio"),
    "bad-symbols": ("★★★★★ ■■■■ ▶▶▶▶ ◆◆◆◆ 최고의 상품입니다 ♥♥♥♥ ☆☆☆☆!", "symbol_ratio"),
    "bad-menu": ("홈\n회사소개\n제품안내\n고객센터\n로그인\n회원가입\n사이트맵", "sentence_end"),
    "bad-repeat": ("오늘 날씨가 정말 좋네요.\n" * 6 + "내일도 좋을까요?", "dup_line_frac"),
}


def _sentences(text):
    return re.split(r"(?<=[.?!])\s+", text.strip())


def _shipped_documents(long=10, short=151):
    """KoAlpaca answers shipped in data/samples that pass every Korean filter:
    `long` of 7+ sentences and 200+ characters, then `short` others."""
    records = json.loads(SAMPLE.read_text(encoding="utf-8"))
    from datatrove.data import Document

    filters, seen, docs = korean_filters(KoreanFilterConfig()), set(), {True: [], False: []}
    for r in records:
        text = r["output"].strip()
        kind = len(_sentences(text)) >= 7 and len(text) >= 200  # one rewritten sentence is a small part
        if len(docs[kind]) < (long if kind else short) and text not in seen \
                and all(f.filter(Document(text=text, id="")) is True for f in filters):
            seen.add(text)
            docs[kind].append(text)
    return docs[True], docs[False]


def _swap_particles(text):
    for a, b in (("은 ", "는 "), ("이 ", "가 "), ("을 ", "를 "), ("에서 ", "에 ")):
        text = text.replace(a, b, 1)
    return text


def _respace(text):
    words = text.split(" ")
    return "".join(w + ("" if i % 3 == 0 else "  ") for i, w in enumerate(words)).strip()


@pytest.fixture(scope="module")
def corpus_input(tmp_path_factory):
    """Two jsonl files: originals in one, their copies in the other (dedup must work across tasks)."""
    long, rest = _shipped_documents()
    pii = rest.pop()  # a document of its own: with the PII sentence it must stay distinct from the others
    near = {}
    for i, d in enumerate(long):
        if i < 4:  # one sentence of 7+ rewritten
            s = _sentences(d)
            s[len(s) // 2] = "그리고 이 문장은 완전히 새로 쓴 문장으로 바뀌었습니다."
            near[f"near-sentence-{i}"] = (f"long-{i}", " ".join(s))
        elif i < 8:
            near[f"near-particles-{i}"] = (f"long-{i}", _swap_particles(d))
        else:
            near[f"near-spaces-{i}"] = (f"long-{i}", _respace(d))
    first = [{"id": f"long-{i}", "text": d} for i, d in enumerate(long)]
    first += [{"id": f"doc-{i:03d}", "text": d} for i, d in enumerate(rest)]
    first.append({"id": "pii", "text": pii + PII_SENTENCE})
    second = [{"id": k, "text": t} for k, (_, t) in near.items()]
    second += [{"id": f"exact-{i}", "text": rest[i]} for i in range(5)]
    second += [{"id": k, "text": t} for k, (t, _) in BAD.items()]
    folder = tmp_path_factory.mktemp("corpus_in")
    for name, rows in (("part-0.jsonl", first), ("part-1.jsonl", second)):
        (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {"folder": folder, "near": near, "rest": rest, "total": len(first) + len(second)}


def refine(corpus_input, tokenizer, out, workers):
    cfg = from_dict(CorpusRecipe, {"output_dir": str(out), "input": {"path": str(corpus_input["folder"]), "format": "jsonl"},
                                   "tokenizer": str(tokenizer), "eval_fraction": 0.1, "executor": {"workers": workers}})
    lines = []
    run(cfg, log=lines.append)
    return json.loads((out / "stats.json").read_text()), "\n".join(lines)


def documents(out):
    rows = []
    for path in sorted((out / "documents").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return {r["id"]: r["text"] for r in rows}, len(rows)


def tokens_by_id(out):
    """{document id: its tokens} read back from the merged train/eval files through documents.jsonl."""
    rows = [json.loads(line) for line in (out / "tokens" / "documents.jsonl").read_text().splitlines()]
    streams = {s: np.fromfile(out / "tokens" / f"{s}.bin", dtype=np.uint32) for s in ("train", "eval")}
    offsets, result = {"train": 0, "eval": 0}, {}
    for r in rows:
        result[r["id"]] = streams[r["split"]][offsets[r["split"]] : offsets[r["split"]] + r["tokens"]].tolist()
        offsets[r["split"]] += r["tokens"]
    assert offsets == {s: len(v) for s, v in streams.items()}  # every token belongs to one listed document
    return result, len(rows)


@pytest.fixture(scope="module")
def one_worker(corpus_input, tiny_neox, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus1")
    return out, *refine(corpus_input, tiny_neox, out, workers=1)


def test_filters_dedup_and_pii(one_worker, corpus_input):
    out, stats, printed = one_worker
    docs, n = documents(out)
    assert n == len(docs) == stats["documents_written"]
    assert stats["documents_read"] == corpus_input["total"]
    steps = {s["step"]: s for s in stats["steps"]}
    reasons = {**steps["Korean quality"]["reasons"], **steps["repetition (Gopher, eojeol)"]["reasons"]}
    assert {reason: reasons.get(reason, 0) for _, reason in BAD.values()} == {reason: 1 for _, reason in BAD.values()}
    assert not any(k.startswith("bad-") for k in docs)
    assert steps["exact duplicates"]["removed"] == 5
    assert steps["near duplicates (MinHash)"]["removed"] == len(corpus_input["near"])
    for copy, (original, _) in corpus_input["near"].items():  # one of each pair is kept
        assert (copy in docs) != (original in docs), copy
    for i in range(5):  # one of each exact pair
        assert (f"doc-{i:03d}" in docs) != (f"exact-{i}" in docs)
    assert all(f"doc-{i:03d}" in docs for i in range(5, len(corpus_input["rest"])))  # every distinct document
    assert stats["pii_masked"] == {"resident_number": 1, "phone": 1, "email": 1}
    assert "<주민번호>" in docs["pii"] and "<전화번호>" in docs["pii"] and "<이메일>" in docs["pii"]
    assert "1234567" not in docs["pii"] and "hong@" not in docs["pii"]
    assert "near duplicates (MinHash)" in printed and "tokens written" in printed


def test_tokens_are_the_tokenizers(one_worker, tiny_neox):
    from transformers import AutoTokenizer

    out, stats, _ = one_worker
    tok = AutoTokenizer.from_pretrained(tiny_neox)
    docs, _ = documents(out)
    by_id, n = tokens_by_id(out)
    assert n == len(docs) and set(by_id) == set(docs)
    for doc_id, text in docs.items():
        assert by_id[doc_id] == tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    meta = json.loads((out / "tokens" / "tokens.json").read_text())
    assert meta["train_tokens"] + meta["eval_tokens"] == sum(map(len, by_id.values()))
    assert 0 < meta["eval_documents"] < meta["train_documents"]


@pytest.fixture(scope="module")
def two_workers(corpus_input, tiny_neox, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus2")
    return out, *refine(corpus_input, tiny_neox, out, workers=2)


def test_two_workers_same_documents_and_tokens(one_worker, two_workers):
    assert documents(one_worker[0])[0] == documents(two_workers[0])[0]
    one, two = tokens_by_id(one_worker[0])[0], tokens_by_id(two_workers[0])[0]
    assert sorted(one.items()) == sorted(two.items())
    assert one_worker[1]["steps"] == two_workers[1]["steps"]


def test_resume_after_a_lost_task(two_workers, corpus_input, tiny_neox, tmp_path):
    """Task 1 of the last two stages killed midway: no completion marker, a truncated output. A rerun redoes
    that task only and ends with the same documents and tokens, none twice."""
    out = tmp_path / "resumed"
    shutil.copytree(two_workers[0], out)
    for stage in ("documents", "tokenize"):
        (out / "work" / "logs" / stage / "completions" / "00001").unlink()
    part = out / "documents" / "00001.jsonl.gz"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    for f in (out / "work" / "tokens").glob("00001.*"):
        f.write_bytes(f.read_bytes()[:7])
    # the stats and token files of the copy name the original folder: rebuilt from the copy's own files
    stats, _ = refine(corpus_input, tiny_neox, out, workers=2)
    docs, n = documents(out)
    assert n == len(docs) and docs == documents(two_workers[0])[0]
    assert tokens_by_id(out) == tokens_by_id(two_workers[0])
    assert stats["steps"] == two_workers[1]["steps"]


def test_pretrain_starts_on_the_token_files(one_worker, tiny_neox, tmp_path, monkeypatch):
    """`kotune pretrain` with data.tokens trains on the files as they are: nothing is tokenized again."""
    import kotune.pretrain.train as pretrain
    from kotune.config import load_config
    from kotune.pretrain.config import PretrainConfig

    out = one_worker[0]
    meta = json.loads((out / "tokens" / "tokens.json").read_text())
    monkeypatch.setattr(pretrain, "prepare_tokens", lambda *a, **k: pytest.fail("pretrain tokenized the corpus again"))
    cfg = load_config(PretrainConfig, str(REPO / "recipes/pretrain/tiny_ko.yaml"), [
        f"tokenizer={tiny_neox}", f"output_dir={tmp_path / 'pt'}", "data.files=[]", f"data.tokens={out / 'tokens'}",
        "data.block_size=64", "data.eval_max_blocks=4", "init.hidden_size=32", "train.max_steps=2",
        "train.global_batch_size=4", "train.micro_batch_size=4", "train.report_to=[]"])
    lines = []
    pretrain.run(cfg, log=lines.append)
    printed = "\n".join(lines)
    assert f"{meta['train_documents']:,} documents / {meta['train_tokens']:,} tokens for training" in printed
    assert json.loads((tmp_path / "pt" / "eval.json").read_text())["eval_tokens"] == meta["eval_tokens"]


def test_pretrain_refuses_token_files_of_another_tokenizer(one_worker, tiny_llama, tmp_path):
    from kotune.pretrain.train import corpus_tokens
    from transformers import AutoTokenizer

    with pytest.raises(ValueError, match="another vocabulary"):
        corpus_tokens(one_worker[0] / "tokens", AutoTokenizer.from_pretrained(tiny_llama))
