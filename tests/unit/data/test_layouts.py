"""The same records read the same way whatever the file layout: identity is the record (its index), not its line.

Hypothesis draws records (valid and invalid Alpaca records, non-objects, near-duplicate Korean instructions)
and writes each draw in every layout kotune reads: a one-line JSON array (json.dump's default), indented
arrays, JSON Lines; each with a BOM, CRLF line ends and blank lines. Every reader must see the same records with
the same indices, and every command must decide the same: check's problems, dedup's kept and dropped records,
training examples, seed tasks, eval prompts and corpus documents.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kotune.data import check, dedup
from kotune.data.corpus import iter_documents
from kotune.data.loading import load_examples
from kotune.data.records import read_records
from kotune.data.schema import DataError
from kotune.eval.generate_eval import load_prompts
from kotune.selfinstruct.seeds import load_seed_tasks

# Near-duplicates must be common, so instructions are built from a few Korean phrases; the alphabet of the
# free text includes characters that other readers treat as line breaks (U+2028, U+0085) and a BOM.
PHRASES = ["원자의 구조를", "세 가지 기본 색을", "다음 문장을", "프랑스의 수도를", "한국어로"]
ENDINGS = ["설명하세요.", "설명해 주세요.", "말해줘", "번역하세요?", "요약하십시오."]
text = st.text(st.sampled_from(list("가나다라 마바사abc1\u2028\u0085\ufeff\t\"\\")), min_size=1, max_size=12)
instruction = st.builds(lambda a, b, extra: f"{a} {b}{extra}", st.sampled_from(PHRASES), st.sampled_from(ENDINGS),
                        st.sampled_from(["", "", " 꼭", "!", "자세히"]))
valid = st.fixed_dictionaries({"instruction": instruction, "input": st.sampled_from(["", "맥락"]), "output": text})
invalid = st.one_of(
    st.fixed_dictionaries({"instruction": instruction, "input": st.just("")}),  # no output
    st.fixed_dictionaries({"instruction": st.integers(), "input": st.just(""), "output": text}),
    st.fixed_dictionaries({"instruction": st.just(" \u200b "), "input": st.just(""), "output": text}),
    st.lists(st.integers(), max_size=2),
    st.none(),
    text,
)
# The first record is an object: a JSON Lines file whose first line is an array reads as a JSON array.
records = st.tuples(valid, st.lists(st.one_of(valid, valid, invalid), max_size=14)).map(lambda t: [t[0], *t[1]])


def layouts(recs: list) -> dict[str, bytes]:
    """Every layout of `recs`: name -> file bytes (the name's suffix is the file's)."""
    one_line = json.dumps(recs, ensure_ascii=False)
    indented = json.dumps(recs, ensure_ascii=False, indent=2)
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
    files = {
        "one_line.json": one_line,
        "one_line_no_newline.jsonl": one_line,
        "indented.json": indented,
        "indented_ascii.json": json.dumps(recs, indent=1),
        "lines.jsonl": jsonl,
        "lines_ascii.jsonl": "".join(json.dumps(r) + "\n" for r in recs),
    }
    for name, body in list(files.items()):
        stem = name.rsplit(".", 1)
        # json.dumps never writes a raw newline inside a string, so these touch only line ends and blank lines.
        files[f"{stem[0]}_bom_crlf.{stem[1]}"] = "\ufeff" + body.replace("\n", "\r\n")
        files[f"{stem[0]}_blank.{stem[1]}"] = "\n\n" + body.replace("\n", "\n\n  \n") + "\n\n"
    return {name: body.encode("utf-8") for name, body in files.items()}


def read_jsonl(path) -> list:
    # Not splitlines(): it also splits at U+2028 and U+0085, which JSON strings may hold unescaped.
    return [json.loads(l) for l in path.read_text(encoding="utf-8").split("\n") if l]


def problem_keys(problems) -> list:
    return sorted((p.index, p.field, p.reason, p.kind) for p in problems)


def decisions(path, tmp_path) -> dict:
    """What every reader makes of `path`, with lines and paths left out (they differ between layouts)."""
    out: dict = {}
    raw = read_records(path)
    out["records"] = [(r.index, r.value) for r in raw.records]
    out["read_problems"] = problem_keys(raw.problems)

    lines: list[str] = []
    out["check_exit"] = check.run([str(path)], out=lines.append)
    out["check_counts"] = [l for l in lines if l.startswith("  ") or l.startswith("problems:")]

    dedup_out = tmp_path / f"{path.name}.dedup.jsonl"
    dedup.run(dedup.DedupConfig(file=str(path), out=str(dedup_out)), echo=lambda _: None)
    out["dedup_kept"] = read_jsonl(dedup_out)
    rows = read_jsonl(dedup_out.with_name(f"{dedup_out.stem}.dropped.jsonl"))
    out["dedup_dropped"] = [(r["record"], r["kept_record"], r["instruction"], r["kept_instruction"], r["rouge_l"]) for r in rows]

    loaded = load_examples([str(path)], skip_invalid=True)
    out["examples"] = [(e.source.index, e.messages) for e in loaded.examples]
    out["load_problems"] = problem_keys(loaded.problems)

    for name, read in [("seeds", lambda: load_seed_tasks([str(path)])), ("prompts", lambda: load_prompts(path))]:
        try:
            out[name] = read()
        except DataError as e:
            out[name] = problem_keys(e.problems)
    docs: list[str] = []
    try:
        docs.extend(iter_documents([path]))
    except DataError as e:
        out["corpus_problems"] = problem_keys(e.problems)
    out["corpus"] = docs
    return out


def check_lines(path, body: bytes, recs: list) -> None:
    """Every record's line is where it starts, and the record number is printed exactly when the line is shared."""
    raw = read_records(path)
    text = body.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    file_lines = text.split("\n")
    per_line = {}
    for r in raw.records:
        per_line.setdefault(r.line, []).append(r.index)
    for r in raw.records:
        first = json.dumps(r.value, ensure_ascii="ascii" in path.name)[:1]
        if per_line[r.line][0] == r.index:
            opening = file_lines[r.line - 1].lstrip(" ")
            assert opening.removeprefix("[" if r.index == 0 else "").lstrip(" ").startswith(first), (path.name, r)
        assert first in file_lines[r.line - 1]
        assert ("(record " in str(r.source)) == (len(per_line[r.line]) > 1)
        assert str(r.source).startswith(f"{path}:{r.line}")


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=records)
def test_every_layout_gives_the_same_records_and_decisions(tmp_path, recs):
    results = {}
    for name, body in layouts(recs).items():
        path = tmp_path / name
        path.write_bytes(body)
        check_lines(path, body, recs)
        results[name] = decisions(path, tmp_path)
    reference = results["lines.jsonl"]
    assert reference["records"] == list(enumerate(recs))
    assert reference["read_problems"] == []
    for name, got in results.items():
        for key in reference:
            assert got.get(key) == reference.get(key), f"{name}: {key} differs from JSON Lines"


def test_one_line_array_of_distinct_records_keeps_them_all(tmp_path):
    """Issue 14: a json.dump'ed array of distinct instructions; dedup used to key records by line and keep 0."""
    recs = [{"instruction": f"{p} {e}", "input": "", "output": "답"} for p in PHRASES for e in ENDINGS[:1]]
    recs += [{"instruction": "원자의 구조를 설명해 주세요.", "input": "", "output": "중복"}]
    path = tmp_path / "one_line.json"
    path.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    echoed = []
    dedup.run(dedup.DedupConfig(file=str(path), out=str(tmp_path / "out.json")), echo=echoed.append)
    kept = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert kept == recs[:-1]
    (row,) = read_jsonl(tmp_path / "out.dropped.jsonl")
    assert (row["record"], row["line"], row["kept_record"], row["kept_line"]) == (6, 1, 1, 1)
    assert any(l.startswith(f"{path}:1 (record 6): dropped") and "~ line 1 (record 1)" in l for l in echoed)


def test_problems_on_a_shared_line_name_the_record(tmp_path):
    path = tmp_path / "one_line.json"
    recs = [{"instruction": "좋아요", "input": "", "output": "네"}, {"instruction": "출력 없음", "input": ""}, 3]
    path.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    lines = []
    assert check.run([str(path)], out=lines.append) == 1
    assert f"{path}:1 (record 2): output: missing" in lines
    assert f"{path}:1 (record 3): record: expected an object, got int" in lines


@pytest.mark.parametrize("body, expected", [
    ('[{"instruction": "a", "input": "", "output": "b"} {"instruction": "c", "input": "", "output": "d"}]',
     "expected ',' or ']' after a record"),
    ('[{"instruction": "a", "input": "", "output": "b"},]', "a ',' before ']' (trailing comma)"),
    ('[{"instruction": "a", "input": "", "output": "b"},, {"instruction": "c", "input": "", "output": "d"}]',
     "a ',' where a record was expected"),
    ('[{"instruction": "a", "input": "", "output": "b"}] x', "extra data after the array's closing ']'"),
    ('[{"instruction": "a", "input": "", "output": NaN}]', "NaN is not JSON"),
    ('[}, {"instruction": "a", "input": "", "output": "b"}]', "Expecting value"),
    ('[{"instruction": "a", "input": "", "output": "b"}', "unterminated JSON array"),
])
def test_an_array_that_is_not_json_is_never_accepted(tmp_path, body, expected):
    path = tmp_path / "x.json"
    path.write_text(body, encoding="utf-8")
    lines = []
    assert check.run([str(path)], out=lines.append) == 1
    assert any(l.startswith(f"{path}:1") and expected in l for l in lines), lines
