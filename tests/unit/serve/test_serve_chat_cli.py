"""Terminal chat: replies stream, history carries over turns, /reset, /system and /exit work."""

from __future__ import annotations

from kotune.models.generate import SamplingParams
from kotune.serve.chat_cli import ASSISTANT_PROMPT, USER_PROMPT, chat_loop


class RecordingEngine:
    """The real engine, recording the conversation it is asked to continue."""

    def __init__(self, engine):
        self.engine, self.seen = engine, []
        self.max_context = engine.max_context

    def encode_chat(self, messages):
        self.seen.append(messages)
        return self.engine.encode_chat(messages)

    def stream(self, ids, params):
        return self.engine.stream(ids, params)


def run_chat(engine, lines, **kw):
    """Chat with `lines` as the user's input.

    Returns: (exit code, everything written, the pieces written, the conversations the engine was asked to continue).
    """
    script, written = iter(lines), []

    def read(prompt):
        written.append(prompt)
        try:
            return next(script)
        except StopIteration:
            raise EOFError from None

    rec = RecordingEngine(engine)
    code = chat_loop(rec, SamplingParams(max_new_tokens=6, temperature=0, ignore_eos=True), read=read,
                     write=written.append, **kw)
    return code, "".join(written), written, rec.seen


def test_multi_turn_history_system_and_reset(engine):
    lines = ["안녕", "/system 존댓말로 답하세요", "두 번째 질문", "/reset", "세 번째", "/exit", "never read"]
    code, out, _, seen = run_chat(engine, lines)
    assert code == 0
    assert out.count(ASSISTANT_PROMPT) == 3
    first, second, third = seen
    assert first == [{"role": "user", "content": "안녕"}]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[0]["content"] == "존댓말로 답하세요" and second[2]["content"]  # the first reply is remembered
    assert third == [{"role": "system", "content": "존댓말로 답하세요"}, {"role": "user", "content": "세 번째"}]
    assert "(new conversation)" in out and "never read" not in out


def test_reply_is_written_in_pieces_as_it_streams(engine):
    _, out, pieces, _ = run_chat(engine, ["안녕하세요"])
    reply = pieces[pieces.index(ASSISTANT_PROMPT) + 1 : pieces.index(USER_PROMPT, 1)]
    text = [p for p in reply if p.strip() and not p.startswith("\n(")]
    assert len(text) >= 2, reply
    assert "(reply cut at 6 tokens" in out


def test_end_of_input_and_unknown_commands(engine):
    code, out, _, seen = run_chat(engine, ["/help"])
    assert code == 0 and seen == []
    assert "unknown command /help" in out and "/reset" in out
