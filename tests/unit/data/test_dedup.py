"""Korean near-duplicate removal: what rouge_score misses, Alpaca's decisions item by item, and `kotune data dedup`."""

import json
import random
import unicodedata

import pytest
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer

from kotune_test_paths import SAMPLES
from kotune.data.dedup import DedupConfig, DedupIndex, KoreanCharTokenizer, dedup, normalize, rouge_l, rouge_l_f, run

NEAR_COPIES = [  # (kept first, then its near-copy): an ending, a particle, a dropped word, spacing and punctuation
    ("건강을 유지하기 위한 세 가지 팁을 알려주세요.", "건강을 유지하기 위한 세 가지 팁을 알려 주세요!"),
    ("원자의 구조를 설명하세요.", "원자의 구조를 설명해 주세요."),
    ("대기 오염을 어떻게 줄일 수 있나요?", "대기 오염은 어떻게 줄일 수 있을까요?"),
    ("다음 문장을 더 전문적으로 다시 작성해주세요.", "다음 문장을 전문적으로 다시 작성해주세요"),
]


def alpaca_decisions(texts, tokenizer=None, threshold=0.7):
    """Alpaca's filter loop, in-process: keep unless max _score_lcs F with a kept instruction is > threshold."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=tokenizer)
    kept, keep = [], []
    for text in texts:
        tokens = scorer._tokenizer.tokenize(text)
        best = max((rouge_scorer._score_lcs(tokens, k).fmeasure for k in kept), default=0.0)
        keep.append(best <= threshold)
        if best <= threshold:
            kept.append(tokens)
    return keep


def sample_instructions(n):
    records = json.loads((SAMPLES / "koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))
    return [r["instruction"] for r in records[:n]]


def test_rouge_score_default_tokenizer_keeps_korean_near_copies_that_kotune_drops():
    texts = [t for pair in NEAR_COPIES for t in pair]
    default = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for kept, copy in NEAR_COPIES:
        assert default.score(kept, copy)["rougeL"].fmeasure == 0.0  # Hangul is not [a-z0-9]: no tokens at all
        assert rouge_l(kept, copy) > 0.7
    assert all(alpaca_decisions(texts))  # Alpaca's code on Korean: every near-copy survives
    decisions = dedup(texts)
    assert [d is None for d in decisions] == [True, False] * len(NEAR_COPIES)
    for i, (kept, _) in enumerate(NEAR_COPIES):
        assert decisions[2 * i + 1].key == 2 * i and decisions[2 * i + 1].text == kept


def test_characters_ignore_spacing_punctuation_case_and_unicode_form():
    assert normalize("설명해 주세요.") == normalize("설명해주세요?") == "설명해주세요"
    assert normalize(unicodedata.normalize("NFD", "한국어 Text, ２０２３!")) == "한국어text2023"
    assert rouge_l("설명해 주세요.", "설명해주세요?") == 1.0
    # only punctuation: no tokens, so rouge_score gives 0 against everything; kept, and matches nothing
    assert dedup(["?!", "...", "?!"]) == [None, None, None]


def test_threshold_is_strictly_greater_with_rouge_score_rounding():
    """Alpaca drops only when F > 0.7, with F computed in floats: 7/10+10 is 0.7 (kept), 7/9+11 is
    0.7000000000000001 (dropped), though both are 14/20."""
    a = "가나다라마바사아자차"
    tie = "가나다라마바사카타파"  # LCS 7 of 10 and 10
    assert rouge_l_f(7, 10, 10) == 0.7 and rouge_l_f(7, 9, 11) > 0.7
    assert rouge_scorer._score_lcs(list(tie), list(a)).fmeasure == rouge_l(tie, a) == 0.7
    assert dedup([a, tie]) == [None, None]
    longer = "가나다라마바사아자차카"  # 11 characters
    short = "가나다라마바사하거"  # 9 characters, LCS 7 with `longer`
    assert rouge_scorer._score_lcs(list(short), list(longer)).fmeasure > 0.7
    assert dedup([longer, short])[1] is not None
    for texts in ([a, tie], [longer, short]):
        assert [d is None for d in dedup(texts)] == alpaca_decisions(texts, KoreanCharTokenizer())


def perturb(text, rng):
    words = text.split()
    choice = rng.randrange(3)
    if choice == 0 and len(words) > 2:
        del words[rng.randrange(len(words))]
        return " ".join(words)
    if choice == 1:
        for a, b in (("세요", "해 주세요"), ("을 ", "를 "), ("는 ", "은 "), ("인가요", "입니까"), ("나요", "을까요")):
            if a in text:
                return text.replace(a, b, 1)
    return text.rstrip(".?!") + rng.choice(["?", "!", ""])


def test_decisions_match_alpaca_method_item_by_item():
    rng = random.Random(0)
    real = sample_instructions(140)
    texts = list(real)
    for _ in range(45):
        src = rng.randrange(len(real))
        texts.insert(rng.randint(src + 1, len(texts)), perturb(real[src], rng))
    ours = [d is None for d in dedup(texts)]
    assert ours == alpaca_decisions(texts, KoreanCharTokenizer())
    assert 30 <= ours.count(False) <= 60  # the copies were mostly caught, real instructions mostly kept


def brute_force(texts, pool=(), threshold=0.7):
    """Keep unless some kept text has F > threshold: the rule with nothing pruned (rapidfuzz LCS for speed)."""
    kept = [normalize(p) for p in pool]
    keep = []
    for text in texts:
        x = normalize(text)
        hit = any(rouge_l_f(LCSseq.similarity(x, k), len(x), len(k)) > threshold for k in kept)
        keep.append(not hit)
        if not hit:
            kept.append(x)
    return keep


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_bounds_and_blocks_never_change_a_decision(threshold):
    """Thousands of texts cross several blocks and length bands; every decision equals the unpruned rule."""
    rng = random.Random(1)
    real = sample_instructions(1000)
    texts = list(real)
    for _ in range(300):
        texts.insert(rng.randrange(len(texts) + 1), perturb(rng.choice(real), rng))
    pool = sample_instructions(1100)[1000:]
    decisions = dedup(texts, threshold, pool=pool)
    assert [d is None for d in decisions] == brute_force(texts, pool, threshold)
    for i, d in enumerate(decisions):
        if d is not None:
            assert d.score > threshold
            kept_text = pool[d.key[1]] if isinstance(d.key, tuple) else texts[d.key]
            assert d.text == kept_text and rouge_l(texts[i], kept_text) == d.score


def test_index_grows_one_offer_at_a_time_as_in_one_batch():
    rng = random.Random(2)
    texts = sample_instructions(200) + [perturb(t, rng) for t in sample_instructions(60)]
    batch = [d is None for d in dedup(texts)]
    index = DedupIndex(0.7)
    single = [index.offer([t])[0] is None for t in texts]
    assert single == batch and len(index) == sum(batch)
    seeds = DedupIndex(0.7)
    seeds.add(["원자의 구조를 설명하세요."], ["seed-0"])
    match = seeds.offer(["원자의 구조를 설명해 주세요."])[0]
    assert match.key == "seed-0" and match.text == "원자의 구조를 설명하세요."


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def test_data_dedup_writes_kept_records_unchanged_and_reports_each_pair(tmp_path):
    records = [
        {"instruction": "원자의 구조를 설명하세요.", "input": "", "output": "원자는...", "id": 1},
        {"instruction": "세 가지 기본 색은 무엇인가요?", "input": "", "output": "빨강, 파랑, 노랑"},
        {"instruction": "원자의 구조를 설명해 주세요.", "input": "", "output": "양성자..."},
        {"instruction": "세 가지 기본 색은 무엇입니까?", "input": "미술", "output": "삼원색"},
        {"instruction": "", "input": "", "output": "빈 지시"},
    ]
    src = tmp_path / "data.jsonl"
    write_jsonl(src, records)
    lines = []
    assert run(DedupConfig(file=str(src)), echo=lines.append) == 0
    out = tmp_path / "data.dedup.jsonl"
    kept = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert kept == [records[0], records[1], records[4]]  # the invalid record passes through, listed
    dropped = [json.loads(l) for l in (tmp_path / "data.dedup.dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(d["record"], d["line"], d["kept_record"], d["kept_line"]) for d in dropped] == [(3, 3, 1, 1), (4, 4, 2, 2)]
    assert any(l.startswith(f"{src}:3: dropped") and "~ line 1" in l for l in lines)
    assert any(l.startswith(f"{src}:5: instruction: empty") for l in lines)
    # a lower threshold drops more; --out names the file, and a .json name gives a JSON array
    run(DedupConfig(file=str(src), threshold=0.3, out=str(tmp_path / "loose.json")), echo=lines.append)
    loose = json.loads((tmp_path / "loose.json").read_text(encoding="utf-8"))
    assert len(loose) <= len(kept)
    with pytest.raises(ValueError, match="is the input file"):
        run(DedupConfig(file=str(src), out=str(src)), echo=lines.append)
