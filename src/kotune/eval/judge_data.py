"""What `kotune eval judge` reads and keeps: its questions, and the append-only caches of answers and judgments.

Questions are the records `kotune eval generate` reads (`prompt`, `instruction` [+ `input`] or `messages`; `id`,
`category`) plus an optional `reference` answer shown to the judge. The default set ships with kotune:
`resources/judge/questions.jsonl`, 82 questions written for kotune in the 8 MT-bench categories.

A cache is a JSON Lines file, one record per line, each flushed and synced when it is written, so a killed run
loses at most the line it was writing. On reading, a torn last line (no newline after it, not JSON) is cut off;
any other bad line is an error naming FILE:LINE, and the file is left alone: it is the user's record.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from kotune.data.records import RecordError, read_records
from kotune.data.schema import DataError, Problem
from kotune.eval.generate_eval import _prompt_from_record
from kotune.resources import resource_path

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
NEEDS_REFERENCE = ("reasoning", "math", "coding")  # where a judge cannot be trusted to know the right answer


def default_questions() -> Path:
    return resource_path("judge", "questions.jsonl")


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    messages: list[dict]
    reference: str | None = None


def load_questions(path: str | Path) -> list[Question]:
    """Questions from a .jsonl/.json file.

    Raises:
        DataError: every bad record as FILE:LINE: field: reason (a ValueError); also repeated ids.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
    raw = read_records(path)
    problems = list(raw.problems)
    if raw.layout == "text" and not raw.problems:
        problems.append(Problem(str(path), 1, "file", "expected JSON Lines (or a JSON list) of questions", "format"))
    questions: list[Question] = []
    seen: dict[str, object] = {}
    for rec in raw.records:
        try:
            prompt = _prompt_from_record(rec.value, rec.index)
            reference = rec.value.get("reference") if isinstance(rec.value, dict) else None
            if reference is not None and (not isinstance(reference, str) or not reference.strip()):
                raise RecordError("reference", "expected a non-empty string (or leave the field out)", "wrong_type")
            if prompt.id in seen:
                raise RecordError("id", f"{prompt.id!r} is already used at {seen[prompt.id]}", "duplicate")
        except RecordError as e:
            problems.append(Problem.at(rec.source, e.field, e.reason, e.kind))
            continue
        seen[prompt.id] = rec.source
        questions.append(Question(prompt.id, prompt.category or "general", prompt.messages, reference))
    if problems:
        raise DataError(problems, "Fix these questions (each needs a prompt or messages; id unique; reference a string).")
    if not questions:
        raise ValueError(f"{path}: no questions found")
    return questions


def digest(*parts) -> str:
    """A stable key for a cache record: sha256 of the parts as canonical JSON."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


class JsonlCache:
    """Records by `key`, read from an append-only JSON Lines file; `add` writes a record through to disk."""

    def __init__(self, path: str | Path, log=print):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            for rec in _read_tolerant(self.path, log):
                self.records[rec["key"]] = rec  # a key written twice (two runs racing): the last one stands
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def add(self, record: dict) -> None:
        self.records[record["key"]] = record
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_tolerant(path: Path, log) -> list[dict]:
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
                raise ValueError("expected an object with a string \"key\"")
            records.append(rec)
        except ValueError as e:
            problems.append(Problem(str(path), number, "key" if "key" in str(e) else "record", str(e)[:200], "json"))
    if tail.strip():
        try:
            rec = json.loads(tail)
            if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
                raise ValueError
            records.append(rec)
            with open(path, "ab") as f:  # a whole record cut just before its newline: end the line
                f.write(b"\n")
        except ValueError:
            log(f"{path}:{len(lines) + 1}: dropping a cut-off last line ({len(tail)} bytes) left by an interrupted run")
            with open(path, "r+b") as f:
                f.truncate(len(data) - len(tail))
    if problems:
        raise DataError(problems, f"{path} is not a kotune judge cache; choose another --out or fix the file.")
    return records
