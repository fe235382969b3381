"""`kotune data check` lists every bad record with file, line and field, and exits 1."""

import json
import re
import subprocess
import sys

from kotune.data.check import run


def problem_lines(lines, path):
    return [l for l in lines if re.match(re.escape(str(path)) + r":\d+: ", l)]


def check(*paths):
    lines = []
    code = run([str(p) for p in paths], out=lines.append)
    return code, lines


def failed_check(path):
    """`kotune data check path` exits 1: (its lines naming a place in `path`, all its lines)."""
    code, lines = check(path)
    assert code == 1
    return problem_lines(lines, path), lines


MALFORMED_ARRAY = """\ufeff[
  {"instruction": "좋은 예", "input": "", "output": "네"},
  {"instruction": "   ", "input": "", "output": "빈 지시"},
  {"instruction": "출력 없음", "input": ""},
  {"instruction": 3, "input": "", "output": "숫자"},
  {"instruction": "깨진 JSON", "output": },
  {"instruction": "마지막", "input": "", "output": "괜찮음"}
]
"""


def test_malformed_json_array_lists_every_bad_record(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(MALFORMED_ARRAY.replace("\n", "\r\n").encode("utf-8"))
    problems, lines = failed_check(path)
    assert problems == [
        f"{path}:3: instruction: empty or whitespace only",
        f"{path}:4: output: missing",
        f"{path}:5: instruction: expected a string, got int",
        f"{path}:6: json: Expecting value (column 40)",
    ]
    assert "  alpaca: 6 records -> 2 examples (sft)" in lines


def test_jsonl_blank_lines_invalid_utf8_and_types(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "네"}]}, ensure_ascii=False)
    rows = [
        good.encode(),
        b"",
        json.dumps({"messages": [{"role": "user", "content": "\xec\x95"}]}).encode().replace(b"\\u00ec\\u0095", b"\xec\x95"),
        json.dumps({"messages": "not a list"}).encode(),
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}).encode(),
        json.dumps({"messages": [{"role": "user", "content": "질문만"}]}, ensure_ascii=False).encode(),
        good.encode(),
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")
    problems, lines = failed_check(path)
    assert problems == [
        f"{path}:3: encoding: invalid UTF-8 byte 0xec at column 44",
        f"{path}:4: messages: expected a list, got str",
        f"{path}:5: messages[1].role: unknown role 'bot' (expected one of ['assistant', 'system', 'user'])",
        f"{path}:6: messages: the last turn is not an assistant reply, so nothing would be trained",
    ]
    assert any(l.startswith("problems: 4 (encoding: 1, invalid: 1, turns: 1, wrong_type: 1)") for l in lines)


def test_clean_files_pass_and_cli_exit_codes(tmp_path):
    from kotune_test_paths import SAMPLES

    code, lines = check(SAMPLES / "koalpaca_v1.0.sample.json", SAMPLES / "vaiv_preference.sample.json")
    assert "  alpaca: 2,000 records -> 2,000 examples (sft)" in lines
    assert code == 1  # the VAIV sample holds pairs with an empty `rejected`, reported with their lines
    assert any(":" in l and "rejected: empty or whitespace only" in l for l in lines)
    ok = subprocess.run([sys.executable, "-m", "kotune.cli", "data", "check", str(SAMPLES / "koalpaca_v1.0.sample.json")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(MALFORMED_ARRAY, encoding="utf-8")
    failed = subprocess.run([sys.executable, "-m", "kotune.cli", "data", "check", str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1 and f"{bad}:4: output: missing" in failed.stdout


def test_unknown_format_names_the_keys(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n', encoding="utf-8")
    code, lines = check(path)
    assert code == 1
    assert any("cannot tell the format from keys ['answer', 'question']" in l for l in lines)


def test_corpus_lists_every_bad_line_after_reading_the_rest(tmp_path):
    from kotune.data.corpus import iter_documents
    from kotune.data.schema import DataError

    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"text": "\xec\x95\x88\xeb\x85\x95"}\n' + b"[" * 4000 + b"\n{bad\n\xff\n" + b'{"text": "\xeb\x81\x9d"}\n')
    docs = []
    try:
        docs.extend(iter_documents([path]))
    except DataError as e:
        problems = [str(p) for p in e.problems]
    assert docs == ["안녕", "끝"]
    assert [p.split(": ")[0] for p in problems] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "nested deeper than 100 levels" in problems[0] and "invalid UTF-8 byte 0xff" in problems[2]
