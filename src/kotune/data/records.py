"""Read a data file into raw records, each with the line it starts on.

Handles what real Korean data files contain: a UTF-8 BOM, CRLF line ends, blank lines, bytes that are not
UTF-8, a JSON array saved under a `.jsonl` name (KoChatGPT's PPO file) and plain-text conversation logs.
Nothing is dropped silently: every line that cannot be read becomes a `Problem` with its line number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from kotune.data.schema import Problem

_DECODER = json.JSONDecoder()
_ESCAPED = re.compile("[\udc80-\udcff]")


@dataclass
class RawFile:
    """The records of one file: `layout` is "json_array", "jsonl" or "text"."""

    path: str
    layout: str
    records: list[tuple[int, object]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    text: str = ""


def _decode(path: str, data: bytes) -> tuple[str, list[Problem]]:
    """Decode UTF-8 (BOM allowed); each line holding invalid bytes is reported and the bytes escaped."""
    problems: list[Problem] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
        for lineno, line in enumerate(text.splitlines(), 1):
            bad = [i for i, ch in enumerate(line) if "\udc80" <= ch <= "\udcff"]
            if bad:
                byte = ord(line[bad[0]]) - 0xDC00
                problems.append(
                    Problem(path, lineno, "encoding", f"invalid UTF-8 byte 0x{byte:02x} at column {bad[0] + 1}", "encoding")
                )
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return text, problems


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _read_json_array(path: str, text: str, raw: RawFile) -> None:
    """Parse a JSON array element by element so each record knows its line, and one bad element does not
    hide the others."""
    pos = text.index("[") + 1
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\n,":
            pos += 1
        if pos >= n:
            raw.problems.append(Problem(path, _line_of(text, n), "json", "unterminated JSON array (missing ']')", "json"))
            return
        if text[pos] == "]":
            return
        start = pos
        try:
            obj, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raw.problems.append(Problem(path, _line_of(text, e.pos), "json", e.msg, "json"))
            # Resynchronise at the next element that starts a line, so later records are still checked.
            nxt = text.find("\n  {", e.pos)
            nxt = text.find("\n{", e.pos) if nxt < 0 else nxt
            if nxt < 0:
                return
            pos = nxt + 1
            continue
        raw.records.append((_line_of(text, start), obj))


def _read_jsonl(path: str, text: str, raw: RawFile) -> None:
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            raw.records.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raw.problems.append(Problem(path, lineno, "json", f"{e.msg} (column {e.colno})", "json"))


def _without_undecodable(records: list[tuple[int, object]]) -> list[tuple[int, object]]:
    """Drop records holding undecodable bytes: each was already reported as an encoding problem."""
    return [(line, obj) for line, obj in records if not _ESCAPED.search(json.dumps(obj, ensure_ascii=False))]


def read_records(path: str | Path) -> RawFile:
    """Read `path` as a JSON array, JSON Lines, or (anything not starting with `[` or `{`) plain text.

    Returns:
        RawFile with records as `(line, parsed JSON value)`; for text files `records` is empty and `text` is set.
    """
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return RawFile(path, "missing", problems=[Problem(path, 0, "file", e.strerror or str(e), "file")])
    text, problems = _decode(path, data)
    stripped = text.lstrip()
    if stripped.startswith("["):
        raw = RawFile(path, "json_array", problems=problems)
        _read_json_array(path, text, raw)
        raw.records = _without_undecodable(raw.records) if problems else raw.records
    elif stripped.startswith("{"):
        raw = RawFile(path, "jsonl", problems=problems)
        _read_jsonl(path, text, raw)
        raw.records = _without_undecodable(raw.records) if problems else raw.records
    else:
        raw = RawFile(path, "text", problems=problems, text=text)
    if raw.layout != "text" and not raw.records and not raw.problems:
        raw.problems.append(Problem(path, 1, "file", "no records", "empty"))
    return raw
