"""The reply parser takes every well-formed task out of the shapes teachers really write, and counts the rest."""

from kotune.selfinstruct.parse import parse_reply
from kotune.selfinstruct.prompt import Task, encode_prompt, load_header


def test_completion_continues_the_prompt_and_keeps_every_block():
    reply = (" 다음 문장을 존댓말로 바꾸세요.\n4. 입력:\n밥 먹었어?\n4. 출력:\n식사하셨어요?\n###\n"
             "5. 명령어: 세계에서 가장 긴 강은 무엇인가요?\n5. 입력:\n<noinput>\n5. 출력:\n나일강입니다.\n###\n6. 명령어:")
    result = parse_reply(reply, continues=4)
    assert result.tasks == [Task("다음 문장을 존댓말로 바꾸세요.", "밥 먹었어?", "식사하셨어요?"),
                            Task("세계에서 가장 긴 강은 무엇인가요?", "", "나일강입니다.")]
    assert result.malformed == 1  # the dangling `6. 명령어:` with no output


def test_chat_reply_with_preamble_markdown_english_labels_and_no_separators():
    reply = ("네, 다음은 새로운 작업입니다:\n\n**4. 명령어:** 주어진 단어로 삼행시를 지어 주세요.\n**4. 입력:** 사랑\n"
             "**4. 출력:**\n사: 사과처럼\n랑: ...\n\n5. Instruction: 다음 글의 주제를 한 문장으로 말해 주세요.\n"
             "5. Input: 우리 동네 도서관이 새로 문을 열었다.\n5. Output: 새 도서관 개관\n\n"
             "6. 지시문: 봄에 어울리는 노래 제목을 지어 주세요.\n6. 출력: 벚꽃 엔딩")
    result = parse_reply(reply, continues=4)
    assert [t.instruction for t in result.tasks] == [
        "주어진 단어로 삼행시를 지어 주세요.", "다음 글의 주제를 한 문장으로 말해 주세요.", "봄에 어울리는 노래 제목을 지어 주세요."]
    assert result.tasks[0].output == "사: 사과처럼\n랑: ..."
    assert result.tasks[2].input == ""  # no input field: a task without input
    assert result.malformed == 0


def test_unusable_blocks_are_counted_not_guessed():
    reply = ("4. 명령어: 출력이 없는 작업\n4. 입력:\n<noinput>\n###\n"
             "5. 명령어: 출력이 두 개인 작업\n5. 출력:\n하나\n5. 출력:\n둘\n###\n"
             "7. 출력:\n명령어 없는 출력\n###\n"
             "8. 명령어: 정상 작업을 하나 남깁니다.\n8. 출력:\n정상")
    result = parse_reply(reply)
    assert [t.instruction for t in result.tasks] == ["정상 작업을 하나 남깁니다."]
    assert result.malformed == 3
    assert parse_reply("죄송하지만 요청을 이해하지 못했습니다.").malformed == 1
    assert parse_reply("").malformed == 0


def test_truncated_reply_loses_only_its_last_task():
    reply = ("4. 명령어: 첫 작업을 하세요.\n4. 출력:\n완료\n###\n"
             "5. 명령어: 두 번째 작업을 하세요.\n5. 출력:\n도중에 끊긴 답")
    result = parse_reply(reply, truncated=True)
    assert [t.instruction for t in result.tasks] == ["첫 작업을 하세요."]
    assert result.truncated == 1


def test_field_labels_inside_an_output_stay_content():
    reply = ("4. 명령어: 입력과 출력 예시를 보여 주는 함수 설명을 쓰세요.\n4. 입력:\n<noinput>\n4. 출력:\n"
             "예시\n입력: 3\n출력: 6\n위처럼 두 배를 돌려줍니다.")
    (task,) = parse_reply(reply).tasks
    assert task.output == "예시\n입력: 3\n출력: 6\n위처럼 두 배를 돌려줍니다."


def test_prompt_examples_parse_back_to_the_seed_tasks():
    seeds = [Task("원자의 구조를 설명하세요.", "", "원자는 원자핵과 전자로 이루어져 있습니다."),
             Task("다음 문장을 요약하세요.", "긴 문장\n두 줄", "짧은 문장")]
    prompt, first = encode_prompt(load_header(None, 20), seeds)
    assert first == 3 and prompt.endswith("###\n3. 명령어:")
    examples = prompt[prompt.index("###"):]
    assert parse_reply(examples).tasks == seeds
