"""kotune's datatrove blocks: the plain-text reader, character shingles, the held-out choice; and tokenizer
training sampling from `kotune corpus` output."""

import gzip
import json

from kotune.corpus.config import DedupConfig
from kotune.corpus.steps import CharacterMinhashSignature, CharacterShingles, TxtReader, held_out, minhash_config
from kotune.pretrain.tokenizer import refined_documents, sample_documents
from kotune_test_paths import SAMPLES


def test_txt_reader_lines_and_paragraphs(tmp_path):
    (tmp_path / "a.txt").write_text("첫 줄\n\n둘째 줄\n셋째 줄\n\n\n넷째\n", encoding="utf-8")
    lines = list(TxtReader(str(tmp_path), unit="line").run())
    assert [d.text for d in lines] == ["첫 줄", "둘째 줄", "셋째 줄", "넷째"]
    assert [d.id for d in lines] == ["a.txt/0", "a.txt/1", "a.txt/2", "a.txt/3"]
    paragraphs = list(TxtReader(str(tmp_path), unit="paragraph").run())
    assert [d.text for d in paragraphs] == ["첫 줄", "둘째 줄\n셋째 줄", "넷째"]


def _signer():
    return CharacterMinhashSignature(output_folder="/tmp/unused", config=minhash_config(DedupConfig()),
                                     language=CharacterShingles())


def test_spacing_does_not_change_the_minhash_signature():
    a = _signer().get_shingles("오늘은 날씨가 정말 좋아서 산책을 나갔습니다.")
    b = _signer().get_shingles("오늘은날씨가  정말좋아서 산책을 나갔 습니다.")
    assert a.size and sorted(a.ravel().tolist()) == sorted(b.ravel().tolist())


def test_numpy_shingles_are_the_character_ngrams():
    """One hash per distinct 3-syllable n-gram of the shipped text (no collisions), as datatrove's own
    per-string hashing of CharacterShingles would give."""
    from datatrove.utils.text import simplify_text

    text = (SAMPLES / "chatbotdata_ko.txt").read_text(encoding="utf-8")[:20_000]
    chars = "".join(simplify_text(text, minhash_config(DedupConfig()).norm_config).split())
    assert len(_signer().get_shingles(text)) == len({chars[i : i + 3] for i in range(len(chars) - 2)})
    assert _signer().get_shingles("네 글").size == 0


def test_held_out_is_a_fixed_fraction_by_id():
    ids = [f"file.jsonl/{i}" for i in range(20_000)]
    share = sum(held_out(i, 0.1) for i in ids) / len(ids)
    # a binomial share of 20,000 draws: 4 standard errors (sqrt(0.1 * 0.9 / 20000) = 0.0021) either side
    assert abs(share - 0.1) < 4 * 0.0021
    assert [held_out(i, 0.1) for i in ids[:100]] == [held_out(i, 0.1) for i in ids[:100]]
    assert not any(held_out(i, 0.0) for i in ids[:100])


def test_tokenizer_training_samples_refined_documents(tmp_path):
    docs = tmp_path / "documents"
    docs.mkdir()
    for rank in range(2):
        with gzip.open(docs / f"{rank:05d}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i in range(50):
                f.write(json.dumps({"id": f"{rank}/{i}", "text": f"문서 {rank}-{i}"}, ensure_ascii=False) + "\n")
    everything = list(refined_documents(tmp_path))
    assert len(everything) == 100 and everything[0] == "문서 0-0" and everything[-1] == "문서 1-49"
    sample = sample_documents(iter(everything), 10, seed=3)
    assert len(sample) == 10 == len(set(sample)) and sample == sample_documents(iter(everything), 10, seed=3)
    assert sample == sorted(sample, key=everything.index)  # corpus order
    assert sample_documents(iter(everything), 1000, seed=3) == everything


def test_jsonl_lines_that_hold_no_document_are_counted_not_lost(tmp_path):
    from kotune.corpus.steps import CheckedJsonlReader
    from kotune.corpus.stats import print_stats

    lines = ['{"text": "안녕하세요, 반갑습니다."}', '{"text": "둘째 문서', '{"body": "텍스트 필드가 없음"}', "",
             '{"text": ""}', '["not", "an", "object"]', '{"text": "마지막 문서입니다."}']
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    reader = CheckedJsonlReader(str(tmp_path))
    docs = list(reader.run())
    assert [d.text for d in docs] == ["안녕하세요, 반갑습니다.", "마지막 문서입니다."]
    counts = {k: reader.stats[k].total for k in CheckedJsonlReader.SKIPPED}
    assert counts == {"unreadable_json": 1, "no_text": 3}  # the blank line is no record; every other line is accounted for
    shown: list[str] = []
    print_stats({"documents_read": 2, "lines_skipped": counts, "steps": [], "pii_masked": {}, "documents_with_pii": 0,
                 "documents_written": 2, "tokens": None}, log=shown.append)
    assert "unreadable_json 1" in shown[1] and "no_text 3" in shown[1]
