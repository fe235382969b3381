"""Converters from the formats Korean instruction data comes in to the internal schema.

Each converter is a pure function `(record, source) -> list[Conversation | PreferencePair]` that raises
`FieldError` naming the field that is wrong. `detect_format` picks the converter from a record's keys; a
recipe's `format:` overrides it. `ignored_fields` names the keys of a record its converter does not use, so the
loader can report them instead of dropping what a user wrote without a word.
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
        self.field, self.reason, self.kind = field, reason, kind


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
    return _reply_text(_text(rec, key), key)


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


# The two layouts of a turn: ShareGPT's {from, value} and OpenAI's {role, content}; either is read in any list.
_TURN_LAYOUTS = (("from", "value"), ("role", "content"))
TURN_KEYS = frozenset(k for layout in _TURN_LAYOUTS for k in layout)
_CHAT_ROLES = {r: r for r in ("system", "user", "assistant")}


def _turn(turn: object, where: str, roles: dict[str, str]) -> Message:
    if not isinstance(turn, dict):
        raise FieldError(where, f"expected an object, got {type(turn).__name__}", "wrong_type")
    layout = next((lay for lay in _TURN_LAYOUTS if lay[0] in turn), None)
    if layout is None:
        raise FieldError(where, f"expected {{from, value}} or {{role, content}}, got keys {sorted(turn)}",
                         "missing_field")
    role_key, text_key = layout
    role = turn[role_key]
    if not isinstance(role, str) or role not in roles:
        raise FieldError(f"{where}.{role_key}", f"unknown role {role!r} (expected one of {sorted(roles)})", "invalid")
    try:
        content = _text(turn, text_key)
    except FieldError as e:
        raise FieldError(f"{where}.{e.field}", e.reason, e.kind) from None
    return Message(roles[role], content)


def _turns(rec: dict, key: str, roles: dict[str, str]) -> list[Message]:
    turns = rec.get(key)
    if turns is None:
        raise FieldError(key, "missing", "missing_field")
    if not isinstance(turns, list):
        raise FieldError(key, f"expected a list, got {type(turns).__name__}", "wrong_type")
    return [_turn(turn, f"{key}[{i}]", roles) for i, turn in enumerate(turns)]


def _with_system(rec: dict, messages: list[Message], turns_key: str) -> list[Message]:
    """A top-level `system` (LLaMA-Factory's ShareGPT layout) as the system message; blank means none."""
    system = _text(rec, "system", required=False, allow_empty=True)
    if is_blank(system):
        return messages
    if messages and messages[0].role == "system":
        raise FieldError("system", f"given both as this field and as the first turn of {turns_key}; keep one",
                         "invalid")
    return [Message("system", system), *messages]


def from_sharegpt(rec: dict, src: Source) -> list[Conversation]:
    """ShareGPT / Vicuna: `{conversations: [{from, value}], system?}`; turns may also be `{role, content}`."""
    messages = _with_system(rec, _turns(rec, "conversations", _SHAREGPT_ROLES), "conversations")
    return [_conversation(messages, src, "conversations")]


def from_openai(rec: dict, src: Source) -> list[Conversation]:
    """OpenAI chat: `{messages: [{role, content}]}`."""
    return [_conversation(_turns(rec, "messages", _CHAT_ROLES), src, "messages")]


def from_kochatgpt_sft(rec: dict, src: Source) -> list[Conversation]:
    """KoChatGPT SFT: `{prompt, completion, tokens}`."""
    return [Conversation((Message("user", _text(rec, "prompt")), Message("assistant", _reply(rec, "completion"))), src)]


def _check_prompt(messages: list[Message], field: str) -> tuple[Message, ...]:
    """A prompt in context: optional system, alternating turns, ending with the user turn the reply answers."""
    why = validate_turns((*messages, Message("assistant", "-")))
    if why:
        raise FieldError(field, f"as a prompt followed by the reply: {why}", "turns")
    return tuple(messages)


def _prompt_messages(rec: dict) -> tuple[Message, ...]:
    """A preference or PPO prompt: a string, or a list of messages (system, earlier turns) ending with a user turn."""
    if isinstance(rec.get("prompt"), list):
        return _check_prompt(_turns(rec, "prompt", _SHAREGPT_ROLES), "prompt")
    return (Message("user", _text(rec, "prompt")),)


def _reply_text(text: str, field: str) -> str:
    value = _TRAILING_EOS_TEXT.sub("", text)
    if is_blank(value):
        raise FieldError(field, "empty or whitespace only", "empty")
    return value


def _reply_of(rec: dict, key: str) -> str:
    """A reply given as text, as one assistant turn (`{role, content}` or `{from, value}`), or as a list holding
    exactly that turn (TRL's conversational preference format)."""
    value = [rec[key]] if isinstance(rec.get(key), dict) else rec.get(key)
    if not isinstance(value, list):
        return _reply(rec, key)
    turns = [_turn(turn, f"{key}[{i}]", _SHAREGPT_ROLES) for i, turn in enumerate(value)]
    if len(turns) != 1 or turns[0].role != "assistant":
        raise FieldError(key, f"expected the one assistant reply that follows the prompt, got "
                              f"{[t.role for t in turns]}", "turns")
    return _reply_text(turns[0].content, key)


def _pair(prompt: tuple[Message, ...], rec: dict, src: Source) -> list[PreferencePair]:
    chosen, rejected = _reply_of(rec, "chosen"), _reply_of(rec, "rejected")
    if chosen.strip() == rejected.strip():
        raise FieldError("rejected", "identical to chosen, so the pair teaches nothing", "identical_pair")
    return [PreferencePair(prompt, chosen, rejected, src)]


def _implicit_prompt_pair(rec: dict, src: Source) -> list[PreferencePair]:
    """TRL's implicit-prompt form: chosen and rejected are whole conversations that differ only in the last reply."""
    for key in ("chosen", "rejected"):
        if not isinstance(rec.get(key), list):
            raise FieldError("prompt", f"missing (without a prompt, {key} must be the whole conversation as a list "
                                       "of messages)", "missing_field")
    chosen, rejected = _turns(rec, "chosen", _SHAREGPT_ROLES), _turns(rec, "rejected", _SHAREGPT_ROLES)
    shared = next((i for i, (c, r) in enumerate(zip(chosen, rejected)) if c != r), min(len(chosen), len(rejected)))
    if shared == len(chosen) == len(rejected):
        raise FieldError("rejected", "identical to chosen, so the pair teaches nothing", "identical_pair")
    for key, turns in (("chosen", chosen), ("rejected", rejected)):
        if len(turns) != shared + 1 or turns[-1].role != "assistant":
            raise FieldError(key, f"chosen and rejected must share every message but the last assistant reply; "
                                  f"they differ from message {shared} on", "turns")
    prompt = _check_prompt(chosen[:shared], "chosen")
    return [PreferencePair(prompt, _reply_text(chosen[-1].content, "chosen"),
                           _reply_text(rejected[-1].content, "rejected"), src)]


def from_preference(rec: dict, src: Source) -> list[PreferencePair]:
    """Preference pair: `{prompt, chosen, rejected}` (VAIV RLHF, Anthropic-style exports), and TRL's conversational
    forms: `prompt` as a list of messages (system, earlier turns) with `chosen`/`rejected` as one assistant message
    each, or, without `prompt`, `chosen`/`rejected` as whole conversations differing only in the last reply."""
    if "prompt" not in rec:
        return _implicit_prompt_pair(rec, src)
    return _pair(_prompt_messages(rec), rec, src)


def from_sharegpt_preference(rec: dict, src: Source) -> list[PreferencePair]:
    """LLaMA-Factory's ShareGPT preference layout: `{conversations, chosen, rejected, system?}`; the conversation
    (earlier turns included) is the prompt and ends with a user turn, chosen/rejected are `{from, value}` turns."""
    prompt = _with_system(rec, _turns(rec, "conversations", _SHAREGPT_ROLES), "conversations")
    return _pair(_check_prompt(prompt, "conversations"), rec, src)


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
    """Prompts without answers (KoChatGPT PPO): `{prompt}`, the prompt a string or a list of messages (TRL's
    conversational prompt-only form); usable as PPO or generation prompts only."""
    return [Conversation(_prompt_messages(rec), src)]


@dataclass(frozen=True)
class Format:
    """A known input format: `kind` says which stages can use it ("sft", "preference" or "prompts").

    `keys` detect the format; `fields` are every top-level key its converter reads (default: `keys`), and
    `turn_fields` those holding turns (a turn, or a list of turns) whose own keys are checked too.
    """

    name: str
    kind: str
    keys: frozenset[str]
    convert: Callable[[dict, Source], list]
    description: str
    fields: frozenset[str] | None = None
    turn_fields: frozenset[str] = frozenset()
    field_pattern: str | None = None  # top-level keys read by pattern (KoChatGPT RM's completion_N)


def ignored_fields(fmt: Format, rec: dict) -> list[str]:
    """The keys of `rec` that `fmt`'s converter does not use, nested turn keys as `field[].key` (for reporting)."""
    used = fmt.keys if fmt.fields is None else fmt.fields
    ignored = [k for k in rec if k not in used and not (fmt.field_pattern and re.fullmatch(fmt.field_pattern, k))]
    for key in sorted(fmt.turn_fields):
        value = rec.get(key)
        turns = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
        extra = {k for t in turns if isinstance(t, dict) for k in t if k not in TURN_KEYS}
        ignored += [f"{key}[].{k}" for k in sorted(extra)]
    return ignored


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("alpaca", "sft", frozenset({"instruction", "input", "output"}), from_alpaca,
               "Alpaca / KoAlpaca v1.0 {instruction, input, output}"),
        Format("koalpaca_v1.1", "sft", frozenset({"instruction", "output", "url"}), from_koalpaca_v11,
               "KoAlpaca v1.1 {instruction, output, url}", fields=frozenset({"instruction", "output"})),
        Format("sharegpt", "sft", frozenset({"conversations"}), from_sharegpt,
               "ShareGPT / Vicuna {conversations: [{from, value} or {role, content}], system?}",
               fields=frozenset({"conversations", "system"}), turn_fields=frozenset({"conversations"})),
        Format("openai", "sft", frozenset({"messages"}), from_openai, "OpenAI chat {messages: [{role, content}]}",
               turn_fields=frozenset({"messages"})),
        Format("kochatgpt_sft", "sft", frozenset({"prompt", "completion"}), from_kochatgpt_sft,
               "KoChatGPT SFT {prompt, completion}"),
        Format("kochatgpt_conversation", "sft", frozenset(), lambda rec, src: [],
               "KoChatGPT conversation text (<<start conversation>>, <사람>: / <챗봇>: lines)"),
        Format("kochatgpt_rm", "preference", frozenset({"prompt", "completion_0", "completion_1", "ranking"}),
               from_kochatgpt_rm, "KoChatGPT RM {prompt, completion_0..2, ranking} -> every ordered pair",
               fields=frozenset({"prompt", "ranking"}), turn_fields=frozenset({"prompt"}),
               field_pattern=r"completion_\d+"),
        Format("preference", "preference", frozenset({"chosen", "rejected"}), from_preference,
               "preference pair {prompt, chosen, rejected}; prompt as text or messages (TRL conversational), "
               "or chosen/rejected as whole conversations (TRL implicit prompt)",
               fields=frozenset({"prompt", "chosen", "rejected"}),
               turn_fields=frozenset({"prompt", "chosen", "rejected"})),
        Format("sharegpt_preference", "preference", frozenset({"conversations", "chosen", "rejected"}),
               from_sharegpt_preference, "ShareGPT preference {conversations, chosen: {from, value}, rejected, system?} "
               "(LLaMA-Factory)", fields=frozenset({"conversations", "chosen", "rejected", "system"}),
               turn_fields=frozenset({"conversations", "chosen", "rejected"})),
        Format("prompts", "prompts", frozenset({"prompt"}), from_prompt_only,
               "prompts only {prompt} (KoChatGPT PPO); prompt as text or messages", turn_fields=frozenset({"prompt"})),
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
        if not stripped and not current:
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
