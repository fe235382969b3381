"""`kotune chat MODEL`: multi-turn chat in the terminal; replies stream from the engine as they are generated.

Commands: `/reset` starts a new conversation, `/system TEXT` sets the system message (`/system` alone clears
it), `/exit` (or Ctrl-D) quits. Ctrl-C while a reply streams stops that reply.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from kotune.models.generate import Engine, SamplingParams
from kotune.serve.config import ChatConfig

HELP = "commands: /reset (new conversation), /system TEXT (set the system message), /exit (quit)"
USER_PROMPT = "\n사용자> "
ASSISTANT_PROMPT = "어시스턴트> "


@dataclass
class Conversation:
    """The chat so far: an optional system message and alternating user/assistant turns."""

    system: str | None = None
    turns: list[dict] = field(default_factory=list)

    def messages(self, user: str | None = None) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        tail = [{"role": "user", "content": user}] if user is not None else []
        return head + self.turns + tail

    def add(self, user: str, reply: str) -> None:
        self.turns += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def command(line: str, conv: Conversation) -> tuple[str, bool]:
    """Apply a `/command` to `conv`; returns (what to tell the user, whether to quit)."""
    name, _, arg = line.partition(" ")
    if name in ("/exit", "/quit"):
        return "", True
    if name == "/reset":
        conv.turns.clear()
        return "(new conversation)", False
    if name == "/system":
        conv.system = arg.strip() or None
        return f"(system message: {conv.system})" if conv.system else "(system message cleared)", False
    return f"unknown command {name}; {HELP}", False


def chat_loop(engine: Engine, params: SamplingParams, *, system: str | None = None,
              read: Callable[[str], str] = input, write: Callable[[str], None] | None = None) -> int:
    """Read user lines, stream replies, keep the history; returns the exit code.

    Args:
        read: prompts for and returns one line (raises EOFError at the end of input).
        write: prints text without a newline (default: stdout, flushed so tokens show at once).
    """
    write = write or _write_stdout
    conv = Conversation(system=system)
    while True:
        try:
            line = read(USER_PROMPT).strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return 0
        if not line:
            continue
        if line.startswith("/"):
            message, quit_ = command(line, conv)
            if quit_:
                return 0
            write(message + "\n")
            continue
        reply = _reply(engine, params, conv.messages(line), write)
        if reply is not None:
            conv.add(line, reply)


def _reply(engine: Engine, params: SamplingParams, messages: list[dict], write: Callable[[str], None]) -> str | None:
    """Stream one reply; None when the conversation no longer fits the model's context."""
    ids = engine.encode_chat(messages)
    room = engine.max_context - len(ids)
    if room < 1:
        write(f"(the conversation is {len(ids)} tokens, the model's context is {engine.max_context}: "
              "/reset to start over)\n")
        return None
    write(ASSISTANT_PROMPT)
    parts: list[str] = []
    stream = engine.stream(ids, replace(params, max_new_tokens=min(params.max_new_tokens, room)))
    try:
        for out in stream:
            parts.append(out.text)
            write(out.text)
            if out.finish_reason == "error":
                write(f"\n(error: {out.error})")
            elif out.finish_reason == "length":
                write(f"\n(reply cut at {out.completion_tokens} tokens: raise --max-new-tokens for longer replies)")
    except KeyboardInterrupt:
        stream.close()  # cancels the request in the engine
        write("\n(stopped)")
    write("\n")
    return "".join(parts)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(cfg: ChatConfig) -> int:
    """`kotune chat`: load `cfg.model` into the engine and chat in the terminal until /exit or end of input."""
    try:
        import readline  # noqa: F401  (line editing and history for input(), Hangul included)
    except ImportError:
        pass
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            top_k=cfg.top_k, repetition_penalty=cfg.repetition_penalty, seed=cfg.seed)
    engine = Engine.load(cfg.model, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code,
                         max_batch_size=1, threads=cfg.threads)
    try:
        if engine.template_note:
            print(f"note: {engine.template_note}")
        print(f"kotune chat with {cfg.model}; {HELP}")
        return chat_loop(engine, params, system=cfg.system)
    finally:
        engine.close()
