"""Converters from the formats Korean instruction data comes in to the internal schema.

Each converter is a pure function `(record, source) -> list[Conversation | PreferencePair]` that raises
`FieldError` naming the field that is wrong. `detect_format` picks the converter from a record's keys; a
recipe's `format:` overrides it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

from kotune.data.schema import Conversation, Message, PreferencePair, Source, validate_turns

# Zero-width characters count as blank: 36 VAIV pairs have a `rejected` that is only U+200B.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
# Some exported datasets (VAIV RLHF) end every reply with the EOS text of the model that wrote it; the
# template adds the tokenizer's own EOS, so a literal one would be trained twice.
_TRAILING_EOS_TEXT = re.compile(r"(?:<\|endoftext\|>|</s>|<eos>)\s*$")


class FieldError(ValueError):
    """A record's field is missing, empty or of the wrong type."""

    def __init__(self, field: str, reason: str, kind: str = "invalid"):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.kind = kind


def is_blank(text: str) -> bool:
    return not _INVISIBLE.sub("", text).strip()


def _text(rec: dict, key: str, *, required: bool = True, allow_empty: bool = False) -> str:
    if key not in rec or rec[key] is None:
        if required:
            raise FieldError(key, "missing", "missing_field")
        return ""
    value = rec[key]
    if not isinstance(value, str):
        raise FieldError(key, f"expected a string, got {type(value).__name__}", "wrong_type")
    if not allow_empty and is_blank(value):
        raise FieldError(key, "empty or whitespace only", "empty")
    return value


def _reply(rec: dict, key: str) -> str:
    """A model reply: a non-empty string with any trailing literal EOS text removed."""
    value = _TRAILING_EOS_TEXT.sub("", _text(rec, key))
    if is_blank(value):
        raise FieldError(key, "empty or whitespace only", "empty")
    return value


def _conversation(messages: list[Message], src: Source, field: str) -> Conversation:
    why = validate_turns(tuple(messages))
    if why:
        raise FieldError(field, why, "turns")
    return Conversation(tuple(messages), src)


def from_alpaca(rec: dict, src: Source) -> list[Conversation]:
    """Alpaca / KoAlpaca v1.0: `{instruction, input, output}` (input may be empty)."""
    user = Message("user", _text(rec, "instruction"), _text(rec, "input", required=False, allow_empty=True) or None)
    return [Conversation((user, Message("assistant", _text(rec, "output"))), src)]


def from_koalpaca_v11(rec: dict, src: Source) -> list[Conversation]:
    """KoAlpaca v1.1: `{instruction, output, url}` (url is provenance and is not trained)."""
    _text(rec, "url", required=False, allow_empty=True)
    return [Conversation((Message("user", _text(rec, "instruction")), Message("assistant", _text(rec, "output"))), src)]


_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bing": "assistant", "bard": "assistant", "bot": "assistant", "system": "system",
}


def _turns(rec: dict, key: str, role_key: str, text_key: str, roles: dict[str, str]) -> list[Message]:
    turns = rec.get(key)
    if turns is None:
        raise FieldError(key, "missing", "missing_field")
    if not isinstance(turns, list):
        raise FieldError(key, f"expected a list, got {type(turns).__name__}", "wrong_type")
    messages = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise FieldError(where, f"expected an object, got {type(turn).__name__}", "wrong_type")
        role = turn.get(role_key)
        if not isinstance(role, str) or role not in roles:  # a list or object as role is not hashable
            raise FieldError(f"{where}.{role_key}", f"unknown role {role!r} (expected one of {sorted(roles)})", "invalid")
        try:
            content = _text(turn, text_key)
        except FieldError as e:
            raise FieldError(f"{where}.{e.field}", e.reason, e.kind) from None
        messages.append(Message(roles[role], content))
    return messages


def from_sharegpt(rec: dict, src: Source) -> list[Conversation]:
    """ShareGPT / Vicuna: `{conversations: [{from, value}]}`."""
    return [_conversation(_turns(rec, "conversations", "from", "value", _SHAREGPT_ROLES), src, "conversations")]


def from_openai(rec: dict, src: Source) -> list[Conversation]:
    """OpenAI chat: `{messages: [{role, content}]}`."""
    roles = {r: r for r in ("system", "user", "assistant")}
    return [_conversation(_turns(rec, "messages", "role", "content", roles), src, "messages")]


def from_kochatgpt_sft(rec: dict, src: Source) -> list[Conversation]:
    """KoChatGPT SFT: `{prompt, completion, tokens}`."""
    return [Conversation((Message("user", _text(rec, "prompt")), Message("assistant", _reply(rec, "completion"))), src)]


def _prompt_messages(rec: dict) -> tuple[Message, ...]:
    """A preference prompt: a string, or a list of OpenAI-style messages ending with a user turn."""
    if isinstance(rec.get("prompt"), list):
        msgs = _turns(rec, "prompt", "role", "content", {r: r for r in ("system", "user", "assistant")})
        if not msgs or msgs[-1].role != "user":
            raise FieldError("prompt", "the prompt messages must end with a user turn", "turns")
        return tuple(msgs)
    return (Message("user", _text(rec, "prompt")),)


def from_preference(rec: dict, src: Source) -> list[PreferencePair]:
    """Preference pair: `{prompt, chosen, rejected}` (VAIV RLHF, Anthropic-style exports)."""
    chosen, rejected = _reply(rec, "chosen"), _reply(rec, "rejected")
    if chosen.strip() == rejected.strip():
        raise FieldError("rejected", "identical to chosen, so the pair teaches nothing", "identical_pair")
    return [PreferencePair(_prompt_messages(rec), chosen, rejected, src)]


def from_kochatgpt_rm(rec: dict, src: Source) -> list[PreferencePair]:
    """KoChatGPT RM: `{prompt, completion_0..N, ranking}` where `ranking[i]` is the rank of completion_i
    (0 = best), as KoChatGPT's own RM data loader reads it. Every ordered pair becomes one PreferencePair."""
    keys = sorted((k for k in rec if re.fullmatch(r"completion_\d+", k)), key=lambda k: int(k.split("_")[1]))
    if len(keys) < 2:
        raise FieldError("completion_0", "at least two completions are needed", "missing_field")
    ranking = rec.get("ranking")
    if not isinstance(ranking, list) or len(ranking) != len(keys) or not all(isinstance(r, int) for r in ranking):
        raise FieldError("ranking", f"expected a list of {len(keys)} integer ranks", "wrong_type")
    replies = [_reply(rec, k) for k in keys]
    prompt = _prompt_messages(rec)
    pairs = []
    for i, j in combinations(range(len(keys)), 2):
        if ranking[i] == ranking[j] or replies[i].strip() == replies[j].strip():
            continue  # a tie states no preference; counted by the caller through the pair total
        better, worse = (i, j) if ranking[i] < ranking[j] else (j, i)
        pairs.append(PreferencePair(prompt, replies[better], replies[worse], src))
    return pairs


def from_prompt_only(rec: dict, src: Source) -> list[Conversation]:
    """Prompts without answers (KoChatGPT PPO): `{prompt}`; usable as PPO or generation prompts only."""
    return [Conversation((Message("user", _text(rec, "prompt")),), src)]


@dataclass(frozen=True)
class Format:
    """A known input format: `kind` says which stages can use it ("sft", "preference" or "prompts")."""

    name: str
    kind: str
    keys: frozenset[str]
    convert: Callable[[dict, Source], list]
    description: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("alpaca", "sft", frozenset({"instruction", "input", "output"}), from_alpaca,
               "Alpaca / KoAlpaca v1.0 {instruction, input, output}"),
        Format("koalpaca_v1.1", "sft", frozenset({"instruction", "output", "url"}), from_koalpaca_v11,
               "KoAlpaca v1.1 {instruction, output, url}"),
        Format("sharegpt", "sft", frozenset({"conversations"}), from_sharegpt,
               "ShareGPT / Vicuna {conversations: [{from, value}]}"),
        Format("openai", "sft", frozenset({"messages"}), from_openai, "OpenAI chat {messages: [{role, content}]}"),
        Format("kochatgpt_sft", "sft", frozenset({"prompt", "completion"}), from_kochatgpt_sft,
               "KoChatGPT SFT {prompt, completion}"),
        Format("kochatgpt_conversation", "sft", frozenset(), lambda rec, src: [],
               "KoChatGPT conversation text (<<start conversation>>, <사람>: / <챗봇>: lines)"),
        Format("kochatgpt_rm", "preference", frozenset({"prompt", "completion_0", "completion_1", "ranking"}),
               from_kochatgpt_rm, "KoChatGPT RM {prompt, completion_0..2, ranking} -> every ordered pair"),
        Format("preference", "preference", frozenset({"prompt", "chosen", "rejected"}), from_preference,
               "preference pair {prompt, chosen, rejected}"),
        Format("prompts", "prompts", frozenset({"prompt"}), from_prompt_only, "prompts only {prompt} (KoChatGPT PPO)"),
    ]
}


def detect_format(rec: object) -> Format | None:
    """The format whose keys `rec` has (most specific first), or None."""
    if not isinstance(rec, dict):
        return None
    keys = set(rec)
    if {"instruction", "output"} <= keys:
        return FORMATS["koalpaca_v1.1"] if "input" not in keys and "url" in keys else FORMATS["alpaca"]
    candidates = [f for f in FORMATS.values() if f.keys and f.keys <= keys]
    return max(candidates, key=lambda f: len(f.keys), default=None)


_SPEAKERS = {"<사람>:": "user", "<챗봇>:": "assistant"}
_START = "<<start conversation>>"


def parse_kochatgpt_conversations(text: str, path: str) -> tuple[list[Conversation], list[tuple[int, FieldError]]]:
    """Parse KoChatGPT's conversation log; a line without a speaker tag continues the previous turn."""
    conversations: list[Conversation] = []
    errors: list[tuple[int, FieldError]] = []
    current: list[list[str]] | None = None
    start_line = 0

    def close() -> None:
        if current is None:
            return
        try:
            messages = [Message(role, "\n".join(lines).strip()) for role, *lines in current]
            for i, m in enumerate(messages):
                if is_blank(m.content):
                    raise FieldError(f"turn {i + 1}", "empty or whitespace only", "empty")
            conversations.append(_conversation(messages, Source(path, start_line), "conversation"))
        except FieldError as e:
            errors.append((start_line, e))

    for lineno, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if stripped == _START:
            close()
            current, start_line = [], lineno
            continue
        if not stripped and (current is None or not current):
            continue
        tag = next((t for t in _SPEAKERS if stripped.startswith(t)), None)
        if current is None:
            errors.append((lineno, FieldError("line", f"text before the first {_START!r}", "invalid")))
            current, start_line = [], lineno
        if tag:
            current.append([_SPEAKERS[tag], stripped[len(tag):].strip()])
        elif current:
            current[-1].append(line.rstrip())
        else:
            errors.append((lineno, FieldError("line", "expected a '<사람>:' or '<챗봇>:' turn", "invalid")))
    close()
    return conversations, errors
