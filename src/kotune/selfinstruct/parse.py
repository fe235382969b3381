"""Read the numbered instruction / input / output blocks out of a teacher's reply, whatever shape it takes.

Alpaca splits on `###` and then demands exactly `N. Instruction:`, `N. Input:`, `N. Output:`; any other shape
is lost silently. Teachers, chat models especially, also write English labels, markdown (`**4. 명령어:**`),
no `###`, the example tasks again, a chatty first line, a missing input for tasks without one, or stop mid-task.
This parser finds every `N. label:` marker, groups the fields by task number, and counts what it cannot use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kotune.selfinstruct.prompt import Task

_KINDS = {"명령어": "instruction", "지시문": "instruction", "지시": "instruction", "instruction": "instruction",
          "입력": "input", "input": "input", "출력": "output", "output": "output", "응답": "output"}
_MARKER = re.compile(
    r"^[ \t]*(?:[#>*\-]+[ \t]*)?(?:(\d{1,3})[ \t]*[.)][ \t]*)?\**[ \t]*"
    r"(명령어|지시문|지시|instruction|입력|input|출력|output|응답)[ \t]*\**[ \t]*[:：][ \t]*\**[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_SEPARATOR_TAIL = re.compile(r"(?:\n[ \t]*(?:#{2,}|-{3,}|\*{3,})[ \t]*)+\s*$")
_NO_INPUT = {"<noinput>", "<no input>", "<no_input>", "<입력 없음>", "<입력없음>", "<없음>", "없음", "(없음)", "noinput"}


@dataclass
class ParseResult:
    """Complete tasks in reply order, and how many blocks could not be used."""

    tasks: list[Task] = field(default_factory=list)
    malformed: int = 0
    truncated: int = 0


def _clean(text: str) -> str:
    return _SEPARATOR_TAIL.sub("", "\n" + text.strip()).strip()


def _fields(text: str, continues: int | None) -> list[tuple[int | None, str, str]]:
    """(number, kind, content) for each marker; content runs to the next marker."""
    markers = list(_MARKER.finditer(text))
    if any(m.group(1) for m in markers):
        # Once the reply numbers its fields, an unnumbered `입력:` line is content (an example inside an output).
        markers = [m for m in markers if m.group(1)]
    found = []
    head = text[: markers[0].start()] if markers else text
    if continues is not None and _clean(head) and (not markers or _KINDS[markers[0].group(2).lower()] != "instruction"):
        # The prompt ends with `N. 명령어:`, so a reply may start with task N's instruction itself, followed by its
        # `N. 입력:`. Text followed by an instruction marker instead is a preamble ("다음은 ...입니다:").
        found.append((continues, "instruction", head))
    for m, nxt in zip(markers, markers[1:] + [None]):
        content = text[m.end(): nxt.start() if nxt else len(text)]
        found.append((int(m.group(1)) if m.group(1) else None, _KINDS[m.group(2).lower()], content))
    return found


def parse_reply(text: str, *, continues: int | None = None, truncated: bool = False) -> ParseResult:
    """Tasks in `text`.

    Args:
        text: the teacher's reply.
        continues: the task number the prompt ended on, when `text` continues the prompt (completions API).
        truncated: the reply stopped at max_tokens; its last task is then dropped, as Alpaca does.
    """
    result = ParseResult()
    records: list[dict] = []
    latest: dict[int | None, dict] = {}
    orphans: set[int | None] = set()
    for number, kind, content in _fields(text, continues):
        if kind == "instruction":
            record = {"bad": False}
            records.append(record)
            latest[number] = record
        else:
            record = latest.get(number) if number is not None else (records[-1] if records else None)
            if record is None:
                orphans.add(number)  # an input or output with no instruction before it
                continue
        if kind in record:
            record["bad"] = True  # two outputs for one task: which one belongs to it is a guess
        record[kind] = _clean(content)
    if not records and not orphans and text.strip():
        orphans.add(None)  # prose without a single task
    result.malformed = len(orphans)
    if truncated and records:
        records.pop()
        result.truncated = 1
    for record in records:
        if record["bad"] or not record.get("instruction") or "output" not in record:
            result.malformed += 1
            continue
        task_input = "" if record.get("input", "").lower() in _NO_INPUT else record.get("input", "")
        result.tasks.append(Task(re.sub(r"\s+", " ", record["instruction"]).strip(), task_input, record["output"]))
    return result
