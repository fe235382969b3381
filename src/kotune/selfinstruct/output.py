"""The output file: append-only JSON Lines, each accepted record flushed and synced as soon as it is accepted.

A run that is killed leaves every record it accepted, each on a complete line; at worst the very last line is
cut short (the process died inside `write`). `read_accepted` drops such a torn tail, so a resumed run rebuilds
its dedup pool from exactly the records that count and appends after them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kotune.data.records import read_records
from kotune.data.schema import DataError, Problem


def _last_line_start(path: Path) -> int:
    """Byte offset just after the file's last newline (0 if none), read from the end: the file may be large."""
    with open(path, "rb") as f:
        pos = f.seek(0, 2)
        while pos > 0:
            step = min(pos, 65536)
            f.seek(pos - step)
            cut = f.read(step).rfind(b"\n")
            if cut >= 0:
                return pos - step + cut + 1
            pos -= step
    return 0


def read_accepted(path: str | Path, log=print) -> list[dict]:
    """The records of an earlier run of the same output (none if there is no file).

    Raises:
        DataError: a line other than a torn last one is not a record, naming file, line and field; every such
        line is listed, and the file is left as it is.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = read_records(path)
    if raw.problems and all(p.kind == "empty" for p in raw.problems):
        return []  # an empty file: a run that stopped before accepting anything
    problems = list(raw.problems)
    if raw.layout in ("text", "json_array"):
        problems.append(Problem(str(path), 1, "file", "expected JSON Lines (one record a line)", "format"))
    records = []
    for rec in raw.records:
        value = rec.value
        missing = [k for k in ("instruction", "input", "output") if not isinstance(value, dict) or not isinstance(value.get(k), str)]
        if missing:
            problems.append(Problem.at(rec.source, missing[0], "missing or not a string", "missing_field"))
        else:
            records.append(value)
    # A last line that cannot be read and has no newline after it: the write was cut, so the record was never
    # accepted. Anything else wrong means the file is not ours to repair.
    good = _last_line_start(path)  # where the last complete line ends
    ends_with_newline = good == path.stat().st_size
    last = max((x.line for x in [*raw.records, *raw.problems]), default=0)
    torn = [p for p in raw.problems if p.line == last and p.kind in ("json", "encoding", "too_large")
            and raw.layout == "jsonl" and not ends_with_newline]
    problems = [p for p in problems if p not in torn]
    if problems:
        raise DataError(problems, f"{path} is not a selfinstruct output; choose another `output` or fix the file.")
    if torn:
        log(f"{path}:{last}: dropping a cut-off last line ({path.stat().st_size - good} bytes) left by an "
            "interrupted run")
        with open(path, "r+b") as f:
            f.truncate(good)
    elif records and not ends_with_newline:
        with open(path, "ab") as f:  # a whole record cut just before its newline: end the line before appending
            f.write(b"\n")
    return records


class AppendLog:
    """Appends one JSON object per line; `append_many` returns only after the lines are on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def append_many(self, records: list[dict]) -> None:
        if not records:
            return
        self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()
