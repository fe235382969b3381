"""The shipped KoBEST files and the script that made them: the hub's fields, labels and split sizes."""

import importlib.util
import json

import pytest

from kotune_test_paths import REPO
from kotune.eval.kobest import DATA_DIR, SPLITS, TASKS

FIELDS = {
    "boolq": {"paragraph", "question", "label"},
    "copa": {"premise", "question", "alternative_1", "alternative_2", "label"},
    "wic": {"word", "context_1", "context_2", "label"},
    "hellaswag": {"context", "ending_1", "ending_2", "ending_3", "ending_4", "label"},
    "sentineg": {"sentence", "label"},
}
LABELS = {"boolq": {0, 1}, "copa": {0, 1}, "wic": {0, 1}, "hellaswag": {0, 1, 2, 3}, "sentineg": {0, 1}}


def _converter():
    spec = importlib.util.spec_from_file_location("convert_kobest", REPO / "scripts" / "convert_kobest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task", TASKS)
def test_shipped_files_have_hub_fields_labels_and_sizes(task):
    sizes = dict(zip(SPLITS, _converter().SIZES[task]))
    for split in SPLITS:
        rows = [json.loads(line) for line in (DATA_DIR / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == sizes[split], (task, split)
        assert all(set(r) == FIELDS[task] for r in rows), (task, split)
        assert {r["label"] for r in rows} == LABELS[task], (task, split)
        assert all(isinstance(v, str) and v for r in rows for k, v in r.items() if k != "label")


def test_known_rows_convert_as_the_hub_has_them():
    # first test rows of KoBEST v1.0 as the hub dataset shows them (COPA label 1 = alternative_2; WiC keeps [ ])
    copa = json.loads((DATA_DIR / "copa" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert copa == {"premise": "새로 산 바지의 허리가 컸다.", "question": "결과", "alternative_1": "바지의 밑단을 잘랐다.",
                    "alternative_2": "벨트를 바지에 끼워 사이즈를 조절했다.", "label": 1}
    wic = json.loads((DATA_DIR / "wic" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert wic == {"word": "양분", "context_1": "토양에 [양분]이 풍부하여 나무가 잘 자란다.",
                   "context_2": "태아는 모체로부터 [양분]과 산소를 공급받게 된다.", "label": 1}


def test_converter_mappings_on_crafted_tsv(tmp_path):
    conv = _converter()
    boolq = tmp_path / "b.tsv"
    # mixed-case booleans, and a field that opens with a quote: CSV quoting is honoured, as pandas (the hub) does
    boolq.write_text('ID\tText\tQuestion\tAnswer\n1\t본문\t"뷰티 인사이드"는 영화인가?\tTRUE\n2\t본문2\t질문2\tFalse\n',
                     encoding="utf-8")
    rows = [conv.convert_row("boolq", r, "b") for r in conv.read_tsv(boolq)]
    assert rows == [{"paragraph": "본문", "question": "뷰티 인사이드는 영화인가?", "label": 1},
                    {"paragraph": "본문2", "question": "질문2", "label": 0}]
    senti = tmp_path / "s.tsv"
    senti.write_text("ID\tLabel\tText\n1\t1\t만족입니다\n", encoding="utf-8")  # dev's column order differs from train's
    assert conv.convert_row("sentineg", conv.read_tsv(senti)[0], "s") == {"sentence": "만족입니다", "label": 1}
    copa = {"sentence": "전제", "question": "원인", "1": "가", "2": "나", "Answer": "2"}
    assert conv.convert_row("copa", copa, "c")["label"] == 1
    with pytest.raises(ValueError, match=r"x.tsv:3: expected True/False, got 'maybe'"):
        conv.convert_row("wic", {"Target": "w", "SENTENCE1": "a", "SENTENCE2": "b", "ANSWER": "maybe"}, "x.tsv:3")
    with pytest.raises(ValueError, match="label 4 is not in 0..3"):
        conv.convert_row("hellaswag", {"context": "c", **{f"choice{i}": "e" for i in range(1, 5)}, "label": "4"}, "h")
    empty = tmp_path / "e.tsv"
    empty.write_text("ID\tText\tLabel\n1\t\t0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="e.tsv:2: empty field"):
        conv.read_tsv(empty)
