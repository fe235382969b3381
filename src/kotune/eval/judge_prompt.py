"""The judge's prompt and the reading of its verdict.

The prompt is written in Korean, because the judged answers are Korean and a judge told in English tends to
reward answers that drift into English. It asks for a short comparison and then exactly one verdict token on
the last line: `[[A]]`, `[[B]]` or `[[C]]` (a tie), the form FastChat's MT-bench judge uses, which hosted judges
follow reliably. Where the question has a reference answer (math, reasoning, coding), the judge is shown it and
told to check correctness against it first.

`PROMPT_VERSION` is part of every cached judgment's key: change the wording, bump the version, and earlier
judgments are no longer reused.
"""

from __future__ import annotations

import re

PROMPT_VERSION = "ko-pair-v1"

VERDICTS = ("A", "B", "tie")

_INSTRUCTIONS = """\
당신은 공정한 심사위원입니다. 아래 사용자 질문에 대한 두 AI 어시스턴트의 답변을 비교해, 어느 쪽이 더 나은지 판정하세요.

판정 기준:
- 질문이 요구한 것을 정확히 했는가 (지시를 따랐는가), 내용이 사실에 맞고 정확한가
- 도움이 되는가, 충분히 구체적이고 깊이가 있는가
- 자연스럽고 올바른 한국어인가 (질문이 한국어인데 다른 언어로 답했다면 감점)
{reference_rule}
답변이 제시된 순서가 판정에 영향을 주지 않게 하세요. 답변의 길이만으로 판단하지 말고, 어시스턴트의 이름에도 좌우되지 마세요.
먼저 두 답변을 짧게 비교 설명한 뒤, 마지막 줄에 판정을 다음 셋 중 하나로만 정확히 쓰세요:
[[A]] (A가 더 나음), [[B]] (B가 더 나음), [[C]] (비슷함, 무승부)
"""

_REFERENCE_RULE = "- 참고 답안이 주어졌습니다. 먼저 각 답변의 정답 여부를 참고 답안과 대조해 확인하고, 틀린 답변은 낮게 평가하세요.\n"


def _question_text(messages: list[dict]) -> str:
    """The conversation the contestants answered: one user turn as is, several turns labelled by role."""
    if len(messages) == 1:
        return messages[0]["content"]
    names = {"system": "시스템", "user": "사용자", "assistant": "어시스턴트"}
    return "\n".join(f"[{names.get(m['role'], m['role'])}] {m['content']}" for m in messages)


def judge_prompt(messages: list[dict], answer_a: str, answer_b: str, reference: str | None = None) -> str:
    """The one user message sent to the judge for answers A and B to the chat `messages`."""
    parts = [_INSTRUCTIONS.format(reference_rule=_REFERENCE_RULE if reference else ""),
             f"[사용자 질문]\n{_question_text(messages)}\n"]
    if reference:
        parts.append(f"[참고 답안 시작]\n{reference}\n[참고 답안 끝]\n")
    parts += [f"[어시스턴트 A의 답변 시작]\n{answer_a}\n[어시스턴트 A의 답변 끝]\n",
              f"[어시스턴트 B의 답변 시작]\n{answer_b}\n[어시스턴트 B의 답변 끝]\n",
              "비교 설명과 마지막 줄의 판정([[A]], [[B]] 또는 [[C]])을 쓰세요."]
    return "\n".join(parts)


_TOKEN = re.compile(r"\[\[\s*(A|B|C)\s*\]\]")
_TOKEN_TO_VERDICT = {"A": "A", "B": "B", "C": "tie"}


def parse_verdict(text: str | None) -> str | None:
    """`A`, `B` or `tie` from a judgment, or None when it cannot be read.

    Only the bracketed tokens count. A judgment naming two different verdicts (`[[A]] ... [[B]]`) is None too:
    which one the judge meant is a guess, and a guess would bias the tally.
    """
    found = {_TOKEN_TO_VERDICT[m] for m in _TOKEN.findall(text or "")}
    return found.pop() if len(found) == 1 else None
