"""The one internal schema every input format is converted to.

A training example is a `Conversation` (SFT) or a `PreferencePair` (reward model, DPO). Every record keeps a
`Source` (file, index of the record in it, and its line) so that any later error can still name where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Source:
    """Where a record came from.

    A record's identity is its `index` (0-based position among the file's records), never its line: a JSON
    array written by `json.dump` holds every record on line 1. `line` (1-based, the record's first character)
    only tells the user where to look; when other records start on the same line (`shared_line`) the record's
    number (index + 1) is printed too.
    """

    path: str
    line: int
    index: int | None = None
    shared_line: bool = False

    @property
    def location(self) -> str:
        """`LINE`, or `LINE (record N)` when the line holds more than one record."""
        shared = self.shared_line and self.index is not None
        return f"{self.line} (record {self.index + 1})" if shared else str(self.line)

    def __str__(self) -> str:
        return f"{self.path}:{self.location}" if self.line > 0 else self.path  # line 0: the file as a whole


@dataclass(frozen=True)
class Message:
    """One turn.

    `input` is Alpaca's optional context field. Templates with an Input section (KoAlpaca) show it there;
    every other template sees it appended to `content` after a blank line (see `flatten_input`).
    """

    role: Role
    content: str
    input: str | None = None

    def as_dict(self) -> dict:
        return {"role": self.role, "content": self.content, **({"input": self.input} if self.input else {})}

    def flatten_input(self) -> Message:
        """This message with `input` folded into `content`, for templates that know only role/content."""
        return Message(self.role, f"{self.content}\n\n{self.input}" if self.input else self.content)


@dataclass(frozen=True)
class Conversation:
    """An optional system message, then alternating user/assistant turns ending with an assistant turn."""

    messages: tuple[Message, ...]
    source: Source | None = None

    def as_dicts(self) -> list[dict]:
        return [m.as_dict() for m in self.messages]


@dataclass(frozen=True)
class PreferencePair:
    """A prompt (conversation up to and including the last user turn) with a preferred and a worse reply."""

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    source: Source | None = None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one record, printed as `FILE:LINE: field: reason` (`FILE:LINE (record N): ...` when
    the line holds several records). `index` is the record's position in its file, None for file-level problems."""

    path: str
    line: int
    field: str
    reason: str
    kind: str = field(default="invalid")
    index: int | None = None
    shared_line: bool = False

    @classmethod
    def at(cls, source: Source, field: str, reason: str, kind: str = "invalid") -> Problem:
        """A problem with the record at `source`."""
        return cls(source.path, source.line, field, reason, kind, source.index, source.shared_line)

    def __str__(self) -> str:
        if self.kind == "file" and self.line == 0:  # the file itself (missing, unreadable): no record to point at
            return f"{self.path}: {self.reason}"
        where = Source(self.path, self.line, self.index, self.shared_line)
        return f"{where}: {self.field}: {self.reason}"


class DataError(ValueError):
    """Raised when training data is bad and the recipe did not ask to skip invalid records."""

    def __init__(self, problems: list[Problem], hint: str = ""):
        # Listed file by file (in the order files were read), then in file order.
        files = {p.path: i for i, p in reversed(list(enumerate(problems)))}
        problems = sorted(problems, key=lambda p: (files[p.path], p.line, -1 if p.index is None else p.index))
        self.problems = problems
        lines = [str(p) for p in problems[:50]]
        if len(problems) > 50:
            lines.append(f"... and {len(problems) - 50} more")
        unreadable = problems and all(p.kind == "file" and p.line == 0 for p in problems)
        head = "data file(s) (check data.files)" if unreadable else "invalid record(s)"
        msg = f"{'cannot read ' if unreadable else ''}{len(problems)} {head}:\n" + "\n".join(lines)
        super().__init__(msg + (f"\n{hint}" if hint else ""))


def validate_turns(messages: tuple[Message, ...]) -> str | None:
    """Return why `messages` is not a trainable conversation, or None when it is."""
    body = messages[1:] if messages and messages[0].role == "system" else messages
    if not body:
        return "no user/assistant turns"
    for i, m in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role != expected:
            return f"turn {i + 1} is {m.role!r}, expected {expected!r} (turns must alternate user/assistant)"
    if body[-1].role != "assistant":
        return "the last turn is not an assistant reply, so nothing would be trained"
    return None
