"""Read a data file into raw records, each with its index in the file and the line it starts on.

Handles what real Korean data files contain: a UTF-8 BOM, CRLF line ends, blank lines, bytes that are not
UTF-8, a JSON array saved under a `.jsonl` name (KoChatGPT's PPO file) and plain-text conversation logs.
A record's identity is its index (`Source.index`); its line only tells the user where to look, since a JSON
array written on one line holds every record on line 1.

Nothing is dropped silently and nothing crashes: every record that cannot be read (invalid JSON or UTF-8,
nesting deeper than `MAX_DEPTH`, a line or field over the size limits) becomes a `Problem` naming file, line
and field, and reading goes on with the next record, so one run lists every problem. JSON Lines and text are
streamed line by line and an over-long line is skipped without being held in memory; a JSON array is read
whole (its elements cannot be told apart without parsing them) and each element is bounded after parsing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

from kotune.data.schema import Problem, Source

# A record (one JSON Lines line, one array element) larger than this is reported instead of parsed. Generous on
# purpose: 50 turns each at MAX_FIELD_CHARS of Hangul (3 UTF-8 bytes a character) is 15 MB; anything larger
# is a broken export (a file glued into one line), and parsing it would hold several copies of it in memory.
MAX_RECORD_BYTES = 16 * 2**20
# A string longer than this is reported. Korean BPE tokenizers give 1-2 characters a token, so 100,000
# characters are 50,000+ tokens: several times the longest context any recipe trains (8k), so such a field
# could only be trained by cutting most of it away; it is nearly always a whole page or a blob in one field.
MAX_FIELD_CHARS = 100_000
# A JSON array (or a text log) is read whole, and decoding holds the file about three times over; beyond this size
# the file is reported with the command that turns it into JSON Lines, which is streamed and has no such limit.
MAX_WHOLE_FILE_BYTES = 2**30
# Known formats nest 4 levels (record > turns > turn > text). Deeper records are reported: this bound keeps
# every later step (json.dumps when writing, recursive code in libraries) far from Python's recursion limit.
MAX_DEPTH = 100

_SURROGATE = re.compile("[\ud800-\udfff]")
_BOM = b"\xef\xbb\xbf"
# Outside strings, the characters that open or close a JSON value or separate elements; a string runs to its
# closing quote or, when broken, to the end of its line. Used only to find where a bad array element ends.
_STRUCTURE = re.compile(r'"(?:[^"\\\n]|\\[^\n])*["\n]?|[][{},]')


class RecordError(ValueError):
    """A record that cannot be read: `field` is "json" or the path of the bad value (`messages[0].content`)."""

    def __init__(self, field: str, reason: str, kind: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.kind = field, reason, kind


class Record(NamedTuple):
    """One parsed record: `source` holds its index in the file (its identity) and the line it starts on."""

    source: Source
    value: object

    @property
    def index(self) -> int:
        return self.source.index

    @property
    def line(self) -> int:
        return self.source.line


@dataclass
class RawFile:
    """The records of one file: `layout` is "json_array", "jsonl", "text" or "missing".

    `unreadable` counts records that are in the file but could not be read (each has a Problem), so counts
    of records per file do not depend on whether the records are valid.
    """

    path: str
    layout: str
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    text: str = ""
    unreadable: int = 0


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON (write a number or null)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _check_value(value: object) -> None:
    """Raise RecordError for a value nested deeper than MAX_DEPTH, a string over MAX_FIELD_CHARS, or a lone
    surrogate (a `\\ud800` escape, or undecodable bytes); walks iteratively so depth itself cannot crash it."""
    stack: list[tuple[object, tuple, int]] = [(value, (), 1)]
    while stack:
        obj, path, depth = stack.pop()
        if isinstance(obj, str):
            if len(obj) > MAX_FIELD_CHARS:
                raise RecordError(_field_name(path), f"{len(obj):,} characters, more than the {MAX_FIELD_CHARS:,} "
                                  "kotune reads in one field (see MAX_FIELD_CHARS)", "too_large")
            if _SURROGATE.search(obj):
                raise RecordError(_field_name(path), "holds a lone surrogate (not UTF-8 text)", "encoding")
        elif isinstance(obj, (dict, list)):
            if depth > MAX_DEPTH:
                raise RecordError(_field_name(path), f"nested deeper than {MAX_DEPTH} levels", "too_deep")
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
            for key, child in items:
                if isinstance(key, str) and _SURROGATE.search(key):
                    raise RecordError(_field_name(path), "a key holds a lone surrogate (not UTF-8 text)", "encoding")
                stack.append((child, (*path, key), depth + 1))


def _field_name(path: tuple) -> str:
    """`messages[0].content`; a deep path is cut after 6 steps (`a[0][0][0][0][0]…`)."""
    if not path:
        return "record"
    name = ""
    for key in path[:6]:
        name += f"[{key}]" if isinstance(key, int) else (f".{key}" if name else str(key)[:100])
    return name + ("…" if len(path) > 6 else "")


def loads(text: str) -> object:
    """Parse one record, bounded (see module doc).

    Raises:
        RecordError: invalid JSON (with its column), NaN/Infinity, too deep, a field too long, a lone surrogate.
    """
    try:
        value = _DECODER.decode(text)
    except (ValueError, RecursionError) as e:
        raise _parse_error(e) from None
    _check_value(value)
    return value


def _parse_error(e: ValueError | RecursionError) -> RecordError:
    """The RecordError of what the JSON decoder raised."""
    if isinstance(e, json.JSONDecodeError):
        return RecordError("json", f"{e.msg} (column {e.colno})", "json")
    if isinstance(e, RecursionError):
        return RecordError("json", f"nested deeper than {MAX_DEPTH} levels", "too_deep")
    return RecordError("json", str(e), "json")  # NaN/Infinity, integers of more than 4,300 digits


class Line(NamedTuple):
    """One line of a file, without its line end: `data` is None when it is longer than MAX_RECORD_BYTES."""

    number: int
    data: bytes | None
    size: int


def read_lines(f: BinaryIO) -> Iterator[Line]:
    """The lines of binary file `f` (LF, CRLF or CR ends; a leading BOM dropped), none longer than
    MAX_RECORD_BYTES held in memory: a longer line is read past in chunks and yielded with `data=None`."""
    limit, number, first = MAX_RECORD_BYTES, 0, True
    while True:
        chunk = f.readline(limit + 1)
        if not chunk:
            return
        if first:
            chunk, first = chunk.removeprefix(_BOM), False
        if len(chunk) > limit and not chunk.endswith(b"\n"):
            size = len(chunk)
            while chunk and not chunk.endswith(b"\n"):
                chunk = f.readline(2**20)
                size += len(chunk)
            number += 1
            yield Line(number, None, size - chunk.endswith(b"\n"))
            continue
        body = chunk[:-1] if chunk.endswith(b"\n") else chunk
        parts = body.split(b"\r")
        if len(parts) > 1 and parts[-1] == b"" and chunk.endswith(b"\n"):
            parts.pop()  # CRLF: the \r belongs to the line end
        for part in parts:
            number += 1
            yield Line(number, part, len(part))


def decode_line(line: Line) -> str:
    """UTF-8 text of one line.

    Raises:
        RecordError: the line is over MAX_RECORD_BYTES, or naming its first invalid byte and that byte's column.
    """
    if line.data is None:
        raise RecordError("record", f"line of {line.size:,} bytes, more than the {MAX_RECORD_BYTES:,} kotune reads as "
                          "one record (see MAX_RECORD_BYTES); skipped unread", "too_large")
    try:
        return line.data.decode("utf-8")
    except UnicodeDecodeError as e:
        column = len(line.data[: e.start].decode("utf-8")) + 1
        raise RecordError("encoding", f"invalid UTF-8 byte 0x{line.data[e.start]:02x} at column {column}", "encoding") from None


def iter_jsonl(path: str, f: BinaryIO) -> Iterator[Record | Problem]:
    """The records of JSON Lines file `f`, streamed: one per non-blank line, each with its index; a line that
    cannot be read is yielded as a Problem, and still takes an index (it is a record of the file)."""
    index = 0
    for line in read_lines(f):
        if line.data is not None and not line.data.strip(b" \t"):
            continue
        src = Source(path, line.number, index)
        index += 1
        try:
            yield Record(src, loads(decode_line(line)))
        except RecordError as e:
            yield Problem.at(src, e.field, e.reason, e.kind)


def _decode(path: str, data: bytes) -> tuple[str, list[Problem]]:
    """Decode UTF-8 (BOM allowed); each line holding invalid bytes is reported and the bytes escaped."""
    problems: list[Problem] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
        for lineno, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
            bad = next((i for i, ch in enumerate(line) if "\udc80" <= ch <= "\udcff"), None)
            if bad is not None:
                problems.append(Problem(path, lineno, "encoding", f"invalid UTF-8 byte 0x{ord(line[bad]) - 0xDC00:02x} "
                                        f"at column {bad + 1}", "encoding"))
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return text, problems


class _Lines:
    """Line numbers of positions in `text`, counted incrementally (positions mostly grow while parsing)."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        if pos < self.pos:
            return self.text.count("\n", 0, pos) + 1
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _skip_element(text: str, pos: int) -> int:
    """Where the (invalid) array element starting at `pos` ends: the next ',' or ']' outside strings at its own
    bracket depth, or the end of the text. Iterative, so any nesting is safe, and it always moves forward."""
    depth = 0
    for m in _STRUCTURE.finditer(text, pos):
        ch = m.group()[0]
        if ch == '"':
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            if depth == 0:
                return m.start()
            depth -= 1
        elif depth == 0:
            return m.start()
    return len(text)


@dataclass
class _Element:
    index: int
    start_line: int
    value: object = None
    error: RecordError | None = None
    error_line: int = 0
    end_line: int = 0


def _array_elements(path: str, text: str, raw: RawFile, lines: _Lines) -> list[_Element]:
    """Parse a JSON array element by element so each record knows its index and line, and one bad element
    does not hide the others. Structural mistakes between elements (a missing comma, text after `]`) are
    reported too, so a file that is not JSON is never accepted."""
    elements: list[_Element] = []
    ws = re.compile(r"[ \t\n]*")
    pos, n = text.index("[") + 1, len(text)
    after_value = False  # just read an element: a ',' or ']' must follow
    while True:
        pos = ws.match(text, pos).end()
        if pos >= n:
            raw.problems.append(Problem(path, lines.at(n), "json", "unterminated JSON array (missing ']')", "json"))
            return elements
        ch = text[pos]
        if ch == "]":
            if not after_value and elements:
                raw.problems.append(Problem(path, lines.at(pos), "json", "a ',' before ']' (trailing comma)", "json"))
            pos += 1
            break
        if ch == ",":
            if not after_value:
                raw.problems.append(Problem(path, lines.at(pos), "json", "a ',' where a record was expected", "json"))
            after_value = False
            pos += 1
            continue
        if after_value:
            raw.problems.append(Problem(path, lines.at(pos), "json", "expected ',' or ']' after a record", "json"))
        start = pos
        element = _Element(len(elements), lines.at(start))
        elements.append(element)
        after_value = True
        try:
            element.value, pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:
            element.error = _parse_error(e)
            element.error_line = lines.at(e.pos) if isinstance(e, json.JSONDecodeError) else 0
        if element.error is not None:
            element.value, element.error_line = None, element.error_line or element.start_line
            end = _skip_element(text, start)
            pos = end if end > start else start + 1  # always move on, whatever stray character stopped us
            continue
        element.end_line = lines.at(pos)
        try:
            if pos - start > MAX_RECORD_BYTES // 4 and len(text[start:pos].encode("utf-8", "surrogatepass")) > MAX_RECORD_BYTES:
                raise RecordError("record", f"more than the {MAX_RECORD_BYTES:,} bytes kotune reads as one record "
                                  "(see MAX_RECORD_BYTES)", "too_large")
            _check_value(element.value)
        except RecordError as e:
            element.value, element.error, element.error_line = None, e, element.start_line
    rest = ws.match(text, pos).end()
    if rest < n:
        raw.problems.append(Problem(path, lines.at(rest), "json", "extra data after the array's closing ']'", "json"))
    return elements


def _read_json_array(path: str, text: str, raw: RawFile, encoding_lines: set[int]) -> None:
    lines = _Lines(text)
    elements = _array_elements(path, text, raw, lines)
    starts = Counter(e.start_line for e in elements)
    for e in elements:
        if e.error is None:
            raw.records.append(Record(Source(path, e.start_line, e.index, starts[e.start_line] > 1), e.value))
            continue
        raw.unreadable += 1
        if e.error.kind == "encoding" and encoding_lines.intersection(range(e.start_line, e.end_line + 1)):
            continue  # undecodable bytes (escaped when decoding): already reported on their line
        shared = starts[e.error_line] - (e.start_line == e.error_line) > 0
        raw.problems.append(Problem(path, e.error_line, e.error.field, e.error.reason, e.error.kind, e.index, shared))


def _first_byte(f: BinaryIO) -> bytes:
    """The first byte that is not a BOM or whitespace (b"" for an empty file); leaves `f` at its start."""
    chunk = f.read(65536).removeprefix(_BOM)
    while chunk and not chunk.lstrip(b" \t\r\n"):
        chunk = f.read(65536)
    f.seek(0)
    return chunk.lstrip(b" \t\r\n")[:1]


def read_records(path: str | Path) -> RawFile:
    """Read `path` as a JSON array, JSON Lines, or (anything not starting with `[` or `{`) plain text.

    Returns:
        RawFile with `records` as `Record(source, value)`; for text files `records` is empty and `text` is set.
        Never raises for bad content: every problem is in `problems`.
    """
    path = str(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        return RawFile(path, "missing", problems=[Problem(path, 0, "file", e.strerror or str(e), "file")])
    with f:
        first = _first_byte(f)
        if first == b"{":
            raw = RawFile(path, "jsonl")
            for item in iter_jsonl(path, f):
                if isinstance(item, Problem):
                    raw.problems.append(item)
                    raw.unreadable += 1
                else:
                    raw.records.append(item)
        else:
            layout = "json_array" if first == b"[" else "text"
            size = f.seek(0, 2)
            f.seek(0)
            if size > MAX_WHOLE_FILE_BYTES:
                hint = "; convert it to JSON Lines, which is streamed: jq -c '.[]' FILE > FILE.jsonl" if first == b"[" else ""
                return RawFile(path, layout, problems=[Problem(
                    path, 1, "file", f"{size:,} bytes, more than the {MAX_WHOLE_FILE_BYTES:,} kotune reads whole{hint}",
                    "file")])
            text, problems = _decode(path, f.read())
            raw = RawFile(path, layout, problems=problems)
            if first == b"[":
                _read_json_array(path, text, raw, {p.line for p in problems})
            else:
                raw.text = text
    if raw.layout != "text" and not raw.records and not raw.problems:
        raw.problems.append(Problem(path, 1, "file", "no records", "empty"))
    if raw.layout == "text" and not raw.text.strip() and not raw.problems:
        raw.problems.append(Problem(path, 1, "file", "empty file (no records)", "empty"))
    return raw
