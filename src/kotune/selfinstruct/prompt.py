"""The generation prompt: Alpaca's requirement list in Korean, then numbered example tasks for the teacher to continue.

The requirements are those of Alpaca's `prompt.txt` as the Korean write-up of Alpaca (Alpaca-explainer.md)
gives them, with Alpaca's doubled numbering (1, 2, 3, 2, 3, ...) made consecutive and one requirement added from
the Korean-output variant of the prompt (yeontaek/self-instruct): inputs and outputs are Korean too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NO_INPUT = "<noinput>"

# Field labels written in the prompt; the parser also accepts the English ones a teacher may fall back to.
LABELS = {"instruction": "명령어", "input": "입력", "output": "출력"}

REQUIREMENTS_KO = """\
{num_tasks}개의 다양한 작업 지시문(instruction) 세트를 만들어 달라는 요청을 받았습니다. 이 지시문들은 GPT 모델에 주어지며, \
우리는 GPT 모델이 지시문을 얼마나 잘 수행하는지 평가할 것입니다.

요구 사항은 다음과 같습니다.
1. 다양성을 극대화하기 위해 각 지시문에서 동사를 반복하지 마십시오.
2. 지시문에 사용되는 언어도 다양해야 합니다. 예를 들어, 명령형 지시문과 질문을 섞어야 합니다.
3. 지시문의 종류가 다양해야 합니다. 목록에는 자유로운 글쓰기(open-ended generation), 분류, 편집 등 다양한 유형의 작업이 포함되어야 합니다.
4. GPT 언어 모델이 지시문을 수행할 수 있어야 합니다. 예를 들어 어시스턴트에게 시각, 사진, 이미지 또는 오디오 출력과 관련된 지시문을 만들지 마십시오. 또 다른 예로, 어시스턴트는 어떤 행동도 수행할 수 없으므로 오후 5시에 깨워 달라거나 미리 알림을 설정해 달라고 요청하지 마십시오.
5. 지시문은 한국어로 작성해야 합니다.
6. 지시문은 1~2문장이어야 합니다. 명령문이나 질문 모두 허용됩니다.
7. 지시문에 알맞은 입력을 만들어야 합니다. 입력 필드에는 지시문에 대한 구체적인 예가 들어 있어야 합니다. 현실적인 데이터를 담아야 하며 단순한 자리 표시자를 넣어서는 안 됩니다. 입력은 지시문을 어렵게 만드는 실질적인 내용을 제공해야 하지만, 100단어를 넘지 않는 것이 좋습니다.
8. 모든 지시문에 입력이 필요한 것은 아닙니다. 예를 들어 "세계에서 가장 높은 산은 무엇입니까?"처럼 일반적인 정보를 묻는 지시문에는 구체적인 맥락을 줄 필요가 없습니다. 이 경우 입력 필드에 "{no_input}"만 넣으면 됩니다.
9. 출력은 지시문과 입력에 대한 적절한 응답이어야 합니다. 출력이 100단어 미만인지 확인하십시오.
10. 모든 지시문, 입력, 출력은 한국어로 작성해야 합니다.

{num_tasks}개의 작업 목록:
"""


@dataclass(frozen=True)
class Task:
    """One instruction-following example: Alpaca's {instruction, input, output} ("" when there is no input)."""

    instruction: str
    input: str
    output: str


def load_header(prompt_file: str | None, num_tasks: int) -> str:
    """The text before the examples: `prompt_file` as is, or the Korean requirements for `num_tasks` tasks."""
    if prompt_file is None:
        return REQUIREMENTS_KO.format(num_tasks=num_tasks, no_input=NO_INPUT)
    try:
        data = Path(prompt_file).read_bytes()
    except OSError as e:
        raise ValueError(f"prompt_file: cannot read {prompt_file}: {e.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{prompt_file}:{line}: prompt_file: invalid UTF-8 byte 0x{data[e.start]:02x}; save it as UTF-8") from None


def encode_prompt(header: str, examples: list[Task]) -> tuple[str, int]:
    """Alpaca's `encode_prompt` with Korean labels: the header, then `###`-separated numbered examples, ending
    with the label of the next instruction for the teacher to fill in.

    Returns:
        The prompt and the number of the first task the teacher writes (len(examples) + 1).
    """
    lab = LABELS
    parts = [header.rstrip("\n") + "\n"]
    for i, task in enumerate(examples, 1):
        instruction = re.sub(r"\s+", " ", task.instruction).strip().rstrip(":")
        parts.append(f"###\n{i}. {lab['instruction']}: {instruction}\n{i}. {lab['input']}:\n"
                     f"{task.input.strip() or NO_INPUT}\n{i}. {lab['output']}:\n{task.output.strip()}\n")
    nxt = len(examples) + 1
    parts.append(f"###\n{nxt}. {lab['instruction']}:")
    return "".join(parts), nxt
