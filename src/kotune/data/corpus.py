"""Stream documents out of raw-text corpora for tokenizer training and pre-training.

Large corpora are read line by line, never whole. Plain text: one document per non-blank line, or per
blank-line-separated paragraph. JSON Lines: the `text` field of each record, or, for instruction/chat records,
their messages joined by newlines. Other files kotune reads (JSON arrays, KoChatGPT logs) are converted through
the same loaders as training data. A line that cannot be read is an error naming file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from kotune.data.formats import FieldError, detect_format
from kotune.data.loading import LoadResult, load_file
from kotune.data.schema import Conversation, DataError, PreferencePair, Problem, Source


def _example_text(example) -> str:
    if isinstance(example, Conversation):
        return "\n".join(m.flatten_input().content for m in example.messages)
    if isinstance(example, PreferencePair):
        return "\n".join([*(m.content for m in example.prompt), example.chosen])
    raise TypeError(type(example))


def _jsonl_documents(path: str, text_field: str) -> Iterator[str]:
    with open(path, encoding="utf-8-sig", errors="strict", newline=None) as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError([Problem(path, lineno, "json", e.msg, "json")]) from None
                if isinstance(rec, dict) and isinstance(rec.get(text_field), str):
                    if rec[text_field].strip():
                        yield rec[text_field]
                    continue
                fmt = detect_format(rec)
                if fmt is None:
                    raise DataError([Problem(path, lineno, text_field, f"no {text_field!r} field and no known format", "missing_field")])
                try:
                    for example in fmt.convert(rec, Source(path, lineno)):
                        yield _example_text(example)
                except FieldError as e:
                    raise DataError([Problem(path, lineno, e.field, e.reason, e.kind)]) from None
        except UnicodeDecodeError as e:
            raise DataError([Problem(path, lineno + 1, "encoding", f"invalid UTF-8: {e.reason}", "encoding")]) from None


def _text_documents(path: str, unit: str) -> Iterator[str]:
    with open(path, encoding="utf-8-sig", newline=None) as f:
        paragraph: list[str] = []
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if unit == "line":
                    if line.strip():
                        yield line
                elif line.strip():
                    paragraph.append(line)
                elif paragraph:
                    yield "\n".join(paragraph)
                    paragraph = []
        except UnicodeDecodeError as e:
            raise DataError([Problem(path, lineno + 1, "encoding", f"invalid UTF-8: {e.reason}", "encoding")]) from None
        if paragraph:
            yield "\n".join(paragraph)


def iter_documents(paths: list[str | Path], *, text_field: str = "text", unit: str = "line") -> Iterator[str]:
    """Every document of `paths`, in order.

    Args:
        text_field: the JSONL field holding raw text.
        unit: for plain text, "line" (one document per line) or "paragraph" (blank-line separated).

    Raises:
        DataError: naming file and line of anything unreadable; FileNotFoundError for a missing file.
    """
    for path in map(str, paths):
        if not Path(path).is_file():
            raise FileNotFoundError(f"corpus file not found: {path}")
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="ignore").lstrip("\ufeff").lstrip()
        if path.endswith(".txt") and "<<start conversation>>" not in head:
            yield from _text_documents(path, unit)
        elif path.endswith(".jsonl") and head.startswith("{"):
            yield from _jsonl_documents(path, text_field)
        else:
            result = LoadResult()
            load_file(path, result)
            if result.problems:
                raise DataError(result.problems)
            yield from (_example_text(e) for e in result.examples)
