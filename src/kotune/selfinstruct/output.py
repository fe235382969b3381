"""The output file: append-only JSON Lines, each accepted record flushed and synced as soon as it is accepted.

A run that is killed leaves every record it accepted, each on a complete line; at worst the very last line is
cut short (the process died inside `write`). `read_accepted` drops such a torn tail, so a resumed run rebuilds
its dedup pool from exactly the records that count and appends after them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kotune.data.schema import DataError, Problem


def read_accepted(path: str | Path, log=print) -> list[dict]:
    """The records of an earlier run of the same output (none if there is no file).

    Raises:
        DataError: a line other than a torn last one is not a record, naming file, line and field.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    records, problems = [], []
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if lineno == len(lines):  # no newline after it: the write was cut; the record was never accepted
                good = len(data) - len(raw)
                log(f"{path}:{lineno}: dropping a cut-off last line ({len(raw)} bytes) left by an interrupted run")
                with open(path, "r+b") as f:
                    f.truncate(good)
                break
            problems.append(Problem(str(path), lineno, "json", str(e), "json"))
            continue
        missing = [k for k in ("instruction", "input", "output") if not isinstance(rec, dict) or not isinstance(rec.get(k), str)]
        if missing:
            problems.append(Problem(str(path), lineno, missing[0], "missing or not a string", "missing_field"))
            continue
        records.append(rec)
    if problems:
        raise DataError(problems, f"{path} is not a selfinstruct output; choose another `output` or fix the file.")
    if records and not path.read_bytes().endswith(b"\n"):
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
