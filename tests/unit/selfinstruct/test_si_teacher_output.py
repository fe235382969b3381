"""The teacher client over real HTTP (retries, back-off, fatal errors, the key), and the append-only output."""

import asyncio
import json
import time

import pytest

from kotune.data.schema import DataError
from kotune.selfinstruct.config import TeacherConfig
from kotune.selfinstruct.output import AppendLog, read_accepted
from kotune.common.openai_client import Client as Teacher, EndpointError as TeacherError, RetriesExhausted, api_key
from stub_teacher import Canned, StubTeacher, failure


def teacher_cfg(stub, **kw):
    return TeacherConfig(**{"base_url": stub.base_url, "model": "stub-model", "api_key_env": None,
                            "backoff_s": 0.01, "max_backoff_s": 0.05, "max_retries": 3, "timeout_s": 5, **kw})


def complete(cfg, prompt="프롬프트", **kw):
    async def go():
        teacher = Teacher(cfg, **kw)
        try:
            return await teacher.complete(prompt), teacher.retries
        finally:
            await teacher.close()

    return asyncio.run(go())


def test_retries_429_5xx_and_unreadable_replies_then_succeeds():
    script = [failure(429, **{"Retry-After": "0"}), failure(503), Canned(body="<html>proxy error</html>"),
              Canned(text="4. 명령어: 안녕\n4. 출력:\n네")]
    with StubTeacher(script) as stub:
        reply, retries = complete(teacher_cfg(stub))
    assert reply.text.startswith("4. 명령어") and reply.finish_reason == "stop"
    assert (reply.retries, retries, len(stub.requests)) == (3, 3, 4)
    body = stub.requests[-1]["body"]
    assert stub.requests[-1]["path"] == "/v1/chat/completions"
    assert body["model"] == "stub-model" and body["messages"] == [{"role": "user", "content": "프롬프트"}]


def test_gives_up_after_max_retries_and_stops_at_once_on_client_errors():
    with StubTeacher([failure(500)] * 3) as stub:
        with pytest.raises(RetriesExhausted, match="HTTP 500 on all 3 tries"):
            complete(teacher_cfg(stub, max_retries=2))
    with StubTeacher([failure(404)]) as stub:
        with pytest.raises(TeacherError, match=r"/v1/chat/completions: HTTP 404 for model 'stub-model'"):
            complete(teacher_cfg(stub))
        assert len(stub.requests) == 1  # retrying cannot fix a wrong URL or model


def test_backoff_follows_retry_after():
    with StubTeacher([failure(429, **{"Retry-After": "0.4"}), Canned(text="ok")]) as stub:
        start = time.monotonic()
        complete(teacher_cfg(stub, max_backoff_s=1.0))
        assert time.monotonic() - start >= 0.4


def test_completions_api_sends_prompt_and_stop_sequences():
    with StubTeacher([Canned(text=" 이어서 쓴 지시", finish_reason="length")]) as stub:
        reply, _ = complete(teacher_cfg(stub, api="completions"), stop=["\n20", "20."])
    assert (reply.text, reply.finish_reason) == (" 이어서 쓴 지시", "length")
    req = stub.requests[0]
    assert req["path"] == "/v1/completions" and req["body"]["prompt"] == "프롬프트"
    assert req["body"]["stop"] == ["\n20", "20."]


def test_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.delenv("KOTUNE_TEST_KEY", raising=False)
    with StubTeacher([Canned(text="ok")]) as stub:
        cfg = teacher_cfg(stub, api_key_env="KOTUNE_TEST_KEY")
        with pytest.raises(ValueError, match="KOTUNE_TEST_KEY is not set"):
            api_key(cfg)
        monkeypatch.setenv("KOTUNE_TEST_KEY", "sk-test-123")
        complete(cfg)
    assert stub.requests[0]["headers"]["authorization"] == "Bearer sk-test-123"


def record(i):
    return {"instruction": f"지시 {i}", "input": "", "output": f"답 {i}"}


def test_append_log_and_resume_reading(tmp_path):
    path = tmp_path / "out.jsonl"
    log = AppendLog(path)
    log.append_many([record(0), record(1)])
    log.append_many([])
    assert [r["instruction"] for r in read_accepted(path)] == ["지시 0", "지시 1"]  # on disk before close
    log.close()


def test_a_write_cut_by_a_kill_is_dropped_and_the_file_repaired(tmp_path):
    path = tmp_path / "out.jsonl"
    whole = "".join(json.dumps(record(i), ensure_ascii=False) + "\n" for i in range(2))
    path.write_bytes(whole.encode() + json.dumps(record(2), ensure_ascii=False).encode()[:-7])
    messages = []
    assert len(read_accepted(path, messages.append)) == 2
    assert path.read_bytes() == whole.encode() and "out.jsonl:3: dropping a cut-off last line" in messages[0]
    # a record cut just before its newline is whole: it counts, and the line is ended before anything is appended
    path.write_bytes(whole.encode() + json.dumps(record(2), ensure_ascii=False).encode())
    assert len(read_accepted(path)) == 3
    AppendLog(path).append_many([record(3)])
    assert len(read_accepted(path)) == 4


def test_a_damaged_earlier_line_stops_the_run(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"instruction": "a", "input": "", "output": "b"}\nnot json\n{"instruction": "c", "input": ""}\n',
                    encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_accepted(path)
    assert f"{path}:2: json" in str(e.value) and f"{path}:3: output: missing or not a string" in str(e.value)


def test_a_damaged_file_is_not_repaired_and_one_line_arrays_are_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    body = b'{"instruction": "a", "input": "", "output": "b"}\n' + b"[" * 3000 + b'\n{"instruction": "c", "inp'
    path.write_bytes(body)
    with pytest.raises(DataError) as e:
        read_accepted(path)
    assert f"{path}:2: json: nested deeper than 100 levels" in str(e.value)
    assert path.read_bytes() == body  # the cut last line is not dropped from a file that is not ours
    path.write_text(json.dumps([record(0), record(1)], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match="expected JSON Lines"):
        read_accepted(path)
