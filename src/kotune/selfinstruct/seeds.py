"""Seed tasks: Alpaca records or self-instruct seed tasks, read with every problem named by file, line and field."""

from __future__ import annotations

from kotune.data.formats import FieldError, _text
from kotune.data.records import read_records
from kotune.data.schema import DataError, Problem
from kotune.selfinstruct.prompt import Task


def _seed_task(rec: object) -> Task:
    """`{instruction, input, output}` (Alpaca, kotune's output) or `{instruction, instances: [{input, output}]}`
    (self-instruct's seed_tasks.jsonl; the first instance is used, as Alpaca does)."""
    if not isinstance(rec, dict):
        raise FieldError("record", f"expected an object, got {type(rec).__name__}", "wrong_type")
    instruction = _text(rec, "instruction")
    if "instances" in rec:
        instances = rec["instances"]
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise FieldError("instances", "expected a non-empty list of {input, output} objects", "wrong_type")
        try:
            return Task(instruction, _text(instances[0], "input", required=False, allow_empty=True),
                        _text(instances[0], "output"))
        except FieldError as e:
            raise FieldError(f"instances[0].{e.field}", e.reason, e.kind) from None
    return Task(instruction, _text(rec, "input", required=False, allow_empty=True), _text(rec, "output"))


def load_seed_tasks(paths: list[str]) -> list[Task]:
    """Every seed task of `paths`, in order.

    Raises:
        DataError: listing every unreadable file and invalid record as FILE:LINE: field: reason.
    """
    tasks: list[Task] = []
    problems: list[Problem] = []
    for path in paths:
        raw = read_records(path)
        problems.extend(raw.problems)
        if raw.layout == "text":
            problems.append(Problem(path, 1, "file", "expected JSON or JSON Lines seed tasks", "format"))
            continue
        for rec in raw.records:
            try:
                tasks.append(_seed_task(rec.value))
            except FieldError as e:
                problems.append(Problem.at(rec.source, e.field, e.reason, e.kind))
    if problems:
        raise DataError(problems, "Seed tasks need an instruction and an output (input may be empty).")
    return tasks
