"""Load data files of any known format into the internal schema, collecting every problem.

Used by `kotune data check` and by every training stage, so what `check` reports is exactly what training
would meet.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from kotune.data.formats import (
    FORMATS, FieldError, Format, detect_format, ignored_fields, parse_kochatgpt_conversations,
)
from kotune.data.records import MAX_FIELD_CHARS, Record, read_records
from kotune.data.schema import Conversation, DataError, PreferencePair, Problem, Source

_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, escaped by the reader


@dataclass
class LoadResult:
    """Examples from one or more files, the problems found, and counts for reporting."""

    examples: list[Conversation | PreferencePair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    records_per_format: Counter = field(default_factory=Counter)
    examples_per_format: Counter = field(default_factory=Counter)
    formats_per_file: dict[str, str] = field(default_factory=dict)
    # field -> FILE:LINE of every converted record holding it, for keys the format does not use (`id`, `tools`, ...)
    ignored: dict[str, list[str]] = field(default_factory=dict)

    @property
    def problems_per_kind(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def ignored_lines(self, shown: int = 3) -> list[str]:
        """One line per ignored field: how many records hold it and where the first ones are."""
        return [f"{name}: in {len(where):,} record(s), not used ({', '.join(where[:shown])}"
                f"{', ...' if len(where) > shown else ''})" for name, where in sorted(self.ignored.items())]


def _file_format(path: str, records: list[Record], forced: str | None) -> Format | Problem:
    if forced:
        if forced not in FORMATS:
            return Problem(path, 0, "format", f"unknown format {forced!r}; known: {', '.join(FORMATS)}", "unknown_format")
        return FORMATS[forced]
    fmt = next((f for rec in records if (f := detect_format(rec.value))), None)
    if fmt:
        return fmt
    keys = sorted(map(str, records[0].value))[:20] if records and isinstance(records[0].value, dict) else []
    return Problem(path, records[0].line if records else 1, "format",
                   f"cannot tell the format from keys {keys}; set `format:` (one of {', '.join(FORMATS)})",
                   "unknown_format")


def _unreadable_turn(conversation: Conversation, errors: list) -> bool:
    """Report (in `errors`) a turn longer than MAX_FIELD_CHARS or holding undecodable bytes: text logs have no
    JSON reader to bound them, and their invalid bytes are escaped (and reported on their line) when decoded."""
    for i, m in enumerate(conversation.messages):
        if len(m.content) > MAX_FIELD_CHARS:
            reason, kind = f"{len(m.content):,} characters, more than the {MAX_FIELD_CHARS:,} kotune reads in one field", "too_large"
        elif _UNDECODED.search(m.content):
            reason, kind = "holds bytes that are not UTF-8 (see the encoding problem)", "encoding"
        else:
            continue
        errors.append((conversation.source.line, FieldError(f"turn {i + 1}", reason, kind)))
        return True
    return False


def load_file(path: str, result: LoadResult, forced_format: str | None = None) -> None:
    """Convert one file and add its examples and problems to `result`."""
    raw = read_records(path)
    result.problems.extend(raw.problems)
    if raw.layout == "missing":
        return
    if raw.layout == "text" or forced_format == "kochatgpt_conversation":
        fmt_name = "kochatgpt_conversation"
        conversations, errors = parse_kochatgpt_conversations(raw.text, path)
        conversations = [c for c in conversations if not _unreadable_turn(c, errors)]
        result.examples.extend(conversations)
        result.records_per_format[fmt_name] += len(conversations) + len(errors)
        result.examples_per_format[fmt_name] += len(conversations)
        result.problems.extend(Problem(path, line, e.field, e.reason, e.kind) for line, e in errors)
        result.formats_per_file[path] = fmt_name
        return
    fmt = _file_format(path, raw.records, forced_format)
    if isinstance(fmt, Problem):
        result.problems.append(fmt)
        return
    result.formats_per_file[path] = fmt.name
    # A record that could not even be read (invalid JSON, too large) is still a record of this file: count it.
    result.records_per_format[fmt.name] += raw.unreadable
    for rec in raw.records:
        result.records_per_format[fmt.name] += 1
        if not isinstance(rec.value, dict):
            result.problems.append(Problem.at(rec.source, "record", f"expected an object, got {type(rec.value).__name__}", "wrong_type"))
            continue
        try:
            converted = fmt.convert(rec.value, rec.source)
        except FieldError as e:
            result.problems.append(Problem.at(rec.source, e.field, e.reason, e.kind))
            continue
        result.examples.extend(converted)
        result.examples_per_format[fmt.name] += len(converted)
        for name in ignored_fields(fmt, rec.value):
            result.ignored.setdefault(name, []).append(str(rec.source))


def load_examples(paths: list[str], *, format: str | None = None, kind: str = "sft",
                  skip_invalid: bool = False) -> LoadResult:
    """Load training examples of one kind ("sft", "preference" or "prompts") from `paths`.

    Raises:
        DataError: when any record is invalid and `skip_invalid` is false, or a file holds another kind of data.
    """
    result = LoadResult()
    for path in paths:
        load_file(path, result, format)
    for path, name in result.formats_per_file.items():
        if FORMATS[name].kind != kind:
            raise DataError([Problem(path, 1, "format", f"{name} holds {FORMATS[name].kind} data, this stage needs "
                                     f"{kind} data", "wrong_kind")])
    fatal = [p for p in result.problems if p.kind in ("file", "unknown_format")]
    if fatal or (result.problems and not skip_invalid):
        raise DataError(fatal or result.problems, "" if fatal else "Fix these records, or set "
                        "`data.skip_invalid: true` to train without them (each is listed).")
    return result
