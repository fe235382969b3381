"""Stream documents out of raw-text corpora for tokenizer training and pre-training.

Large corpora are read line by line, never whole. Plain text: one document per non-blank line, or per
blank-line-separated paragraph. JSON Lines: the `text` field of each record, or, for instruction/chat records,
their messages joined by newlines. Other files kotune reads (JSON arrays, KoChatGPT logs) are converted through
the same loaders as training data. Every line that cannot be read is listed (file, line, field) once the
other documents are read, and the run fails then.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from kotune.data.formats import FieldError, detect_format
from kotune.data.loading import LoadResult, load_file
from kotune.data.records import RecordError, decode_line, iter_jsonl, read_lines
from kotune.data.schema import Conversation, DataError, PreferencePair, Problem


def _example_text(example) -> str:
    if isinstance(example, Conversation):
        return "\n".join(m.flatten_input().content for m in example.messages)
    if isinstance(example, PreferencePair):
        return "\n".join([*(m.content for m in example.prompt), example.chosen])
    raise TypeError(type(example))


def _jsonl_documents(path: str, text_field: str, problems: list[Problem]) -> Iterator[str]:
    """Documents of a JSON Lines corpus, streamed; every unreadable line is added to `problems` and skipped."""
    fmt = None
    with open(path, "rb") as f:
        for item in iter_jsonl(path, f):
            if isinstance(item, Problem):
                problems.append(item)
                continue
            rec, src = item.value, item.source
            if isinstance(rec, dict) and isinstance(rec.get(text_field), str):
                if rec[text_field].strip():
                    yield rec[text_field]
                continue
            if not isinstance(rec, dict):
                problems.append(Problem.at(src, "record", f"expected an object, got {type(rec).__name__}", "wrong_type"))
                continue
            # As for training data, the first record of a known format decides the file's format.
            fmt = fmt or detect_format(rec)
            if fmt is None:
                problems.append(Problem.at(src, text_field, f"no {text_field!r} field and no known format", "missing_field"))
                continue
            try:
                examples = fmt.convert(rec, src)
            except FieldError as e:
                problems.append(Problem.at(src, e.field, e.reason, e.kind))
                continue
            yield from map(_example_text, examples)


def group_documents(lines: Iterable[str], unit: str) -> Iterator[str]:
    """Documents from text lines (line ends removed): each non-blank line (`unit` "line"), or each run of
    non-blank lines between blank ones, joined with newlines ("paragraph")."""
    paragraph: list[str] = []
    for text in lines:
        if unit == "line":
            if text.strip():
                yield text
        elif text.strip():
            paragraph.append(text)
        elif paragraph:
            yield "\n".join(paragraph)
            paragraph = []
    if paragraph:
        yield "\n".join(paragraph)


def _text_documents(path: str, unit: str, problems: list[Problem]) -> Iterator[str]:
    """Documents of a plain-text corpus, streamed; a line that is not UTF-8 or too long is reported and skipped."""
    with open(path, "rb") as f:
        yield from group_documents(_decoded_lines(f, path, problems), unit)


def _decoded_lines(f, path: str, problems: list[Problem]) -> Iterator[str]:
    for line in read_lines(f):
        try:
            yield decode_line(line)
        except RecordError as e:
            problems.append(Problem(path, line.number, e.field, e.reason, e.kind))


def iter_documents(paths: list[str | Path], *, text_field: str = "text", unit: str = "line") -> Iterator[str]:
    """Every document of `paths`, in order.

    Args:
        text_field: the JSONL field holding raw text.
        unit: for plain text, "line" (one document per line) or "paragraph" (blank-line separated).

    Raises:
        DataError: after the last document, listing every unreadable line of every file (FILE:LINE: field:
            reason); FileNotFoundError for a missing file.
    """
    problems: list[Problem] = []
    for path in map(str, paths):
        if not Path(path).is_file():
            raise FileNotFoundError(f"corpus file not found: {path}")
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="ignore").lstrip("\ufeff").lstrip()
        if path.endswith(".txt") and "<<start conversation>>" not in head:
            yield from _text_documents(path, unit, problems)
        elif path.endswith(".jsonl") and head.startswith("{"):
            yield from _jsonl_documents(path, text_field, problems)
        else:
            result = LoadResult()
            load_file(path, result)
            problems.extend(result.problems)
            yield from (_example_text(e) for e in result.examples)
    if problems:
        raise DataError(problems, "Fix or remove these lines; every other document was read.")
