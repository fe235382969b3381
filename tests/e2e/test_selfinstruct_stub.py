"""`kotune selfinstruct` end to end against a real local HTTP teacher (a stub OpenAI-compatible server):
counts by reason, concurrency, retries, the output format, resume, and a kill in the middle of a run."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from kotune_test_paths import REPO, SAMPLES
from kotune.config import load_config
from kotune.data.check import run as check_data
from kotune.data.dedup import dedup
from kotune.data.loading import load_examples
from kotune.selfinstruct.config import SelfInstructConfig
from kotune.selfinstruct.run import run
from kotune.selfinstruct.seeds import load_seed_tasks

sys.path.insert(0, str(REPO / "tests" / "unit" / "selfinstruct"))
from stub_teacher import Canned, StubTeacher, failure, numbered  # noqa: E402

pytestmark = pytest.mark.slow
SEEDS = [str(REPO / "data/seeds/ko_seed_tasks.jsonl"), str(REPO / "data/seeds/koalpaca_seed_tasks.jsonl")]

REPLY_A = numbered([
    ("한국의 전통 명절 세 가지를 소개해 주세요.", "", "설날, 추석, 단오가 있습니다."),
    ("다음 문장을 높임말로 바꾸세요.", "밥 먹었어?", "진지 드셨어요?"),
    ("주말에 볼 만한 영화를 추천하고 이유를 설명해 주세요.", "", "「쇼생크 탈출」을 추천합니다."),  # ~ a seed task
    ("가족사진을 보고 느낀 점을 써 주세요.", "", "따뜻했습니다."),
    ("Explain the theory of relativity in simple words.", "", "상대성 이론은..."),
    ("- 다음 목록을 가나다순으로 정리하세요.", "사과, 배", "배, 사과"),
    ("좋아하는 계절과 그 이유를 설명하세요.", "", "<nooutput>"),
    ("시 써", "", "봄"),
    ("한국의 전통 명절 세 가지를 소개해주세요!", "", "설날, 추석, 한식입니다."),  # ~ task 4 of this reply
]) + "\n###\n13. 명령어: 출력이 없는 작업입니다.\n13. 입력:\n<noinput>"
REPLY_B = ("네, 이어서 작성하겠습니다.\n\n**4. 명령어:** 우리나라에서 가장 높은 산은 어디인가요?\n**4. 입력:** <noinput>\n"
           "**4. 출력:** 한라산입니다.\n\n5. Instruction: 다음 숫자들의 평균을 구하세요.\n5. Input: 3, 5, 10\n"
           "5. Output: 6입니다.\n\n6. 명령어: 여름 방학 계획을 세우는 방법을 알려 주세요.\n6. 출력: 먼저 목표를")
REPLY_C = "죄송합니다. 요청하신 형식으로는 작성할 수 없습니다."
KEPT = ["한국의 전통 명절 세 가지를 소개해 주세요.", "다음 문장을 높임말로 바꾸세요.",
        "우리나라에서 가장 높은 산은 어디인가요?", "다음 숫자들의 평균을 구하세요."]


def config(stub, output, **kw) -> SelfInstructConfig:
    data = {"output": str(output), "seeds": SEEDS,
            "teacher": {"base_url": stub.base_url, "model": "stub-model", "api_key_env": None, "concurrency": 3,
                        "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 10}, **kw}
    path = Path(output).with_suffix(".recipe.yaml")
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_config(SelfInstructConfig, str(path))


def test_one_run_counts_every_rejection_retries_and_writes_alpaca_jsonl(tmp_path):
    script = [failure(429, **{"Retry-After": "0"}), failure(502), Canned(body="not json", delay=0.2),
              Canned(REPLY_A, delay=0.4), Canned(REPLY_B, "length", delay=0.4), Canned(REPLY_C, delay=0.4)]
    out = tmp_path / "gen.jsonl"
    with StubTeacher(script) as stub:
        summary = run(config(stub, out, num_instructions=100, max_requests=3), log=lambda *_: None)
    assert stub.max_in_flight >= 2, "requests were not in flight together"
    assert (summary.requests, summary.failed_requests, summary.retries, summary.new) == (3, 0, 3, 4)
    assert summary.rejected == Counter(duplicate=2, blacklist=1, not_korean=1, punctuation=1, empty_output=1,
                                       too_short=1, malformed=2, truncated=1)
    assert summary.generated == 14  # 9 + 1 malformed in A, 2 + 1 cut off in B, 1 malformed in C
    prompt = stub.requests[0]["body"]["messages"][0]["content"]
    assert "10. 모든 지시문, 입력, 출력은 한국어로" in prompt and prompt.endswith("###\n4. 명령어:")

    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["instruction"] for r in records) == sorted(KEPT)
    assert all(r["teacher"] == "stub-model" for r in records)
    assert next(r for r in records if r["instruction"] == KEPT[1])["input"] == "밥 먹었어?"
    assert next(r for r in records if r["instruction"] == KEPT[2])["input"] == ""  # <noinput>
    loaded = load_examples([str(out)])  # what `kotune sft` reads, as Alpaca records
    assert loaded.formats_per_file == {str(out): "alpaca"} and len(loaded.examples) == 4
    assert check_data([str(out)], out=lambda *_: None) == 0
    saved = json.loads((tmp_path / "gen.summary.json").read_text(encoding="utf-8"))
    assert saved["new"] == 4 and saved["rejected"]["duplicate"] == 2
    assert load_config(SelfInstructConfig, str(tmp_path / "gen.config.yaml")).teacher.model == "stub-model"


def test_a_second_run_resumes_with_the_dedup_pool_rebuilt_from_the_file(tmp_path):
    out = tmp_path / "gen.jsonl"
    with StubTeacher([Canned(REPLY_A)]) as stub:
        run(config(stub, out, num_instructions=100, max_requests=1), log=lambda *_: None)
    before = out.read_text(encoding="utf-8")
    again = numbered([("한국의 전통 명절 세 가지를 소개하세요.", "", "설날과 추석"),  # ~ a record of the first run
                      ("조선 시대의 대표적인 발명품을 알려 주세요.", "", "측우기, 앙부일구")])
    messages = []
    with StubTeacher([Canned(again)]) as stub:
        summary = run(config(stub, out, num_instructions=3), log=messages.append)
    assert any("resuming" in m and "2 records already there" in m for m in messages)
    assert (summary.new, summary.total, summary.rejected["duplicate"]) == (1, 3, 1)
    assert out.read_text(encoding="utf-8").startswith(before)
    with StubTeacher([]) as stub:  # already complete: nothing is asked
        assert run(config(stub, out, num_instructions=3), log=lambda *_: None).requests == 0
        assert stub.requests == []


def test_a_teacher_that_cannot_work_stops_the_run_with_its_reason(tmp_path):
    from kotune.common.openai_client import EndpointError as TeacherError

    out = tmp_path / "gen.jsonl"
    with StubTeacher([failure(404)] * 3) as stub:  # e.g. a model name the server does not know
        with pytest.raises(TeacherError, match=r"/v1/chat/completions: HTTP 404 for model 'stub-model'"):
            run(config(stub, out, num_instructions=10), log=lambda *_: None)
    with StubTeacher([failure(500)] * 12) as stub:
        cfg = config(stub, out, num_instructions=10, max_failed_requests=2)
        cfg.teacher.max_retries = 1
        with pytest.raises(TeacherError, match="2 requests failed after all retries; last: .*HTTP 500 on all 2 tries"):
            run(cfg, log=lambda *_: None)
    assert not out.exists() or out.read_text() == ""


def sample_reply(k: int) -> Canned:
    """Reply k: 17 real KoAlpaca tasks (rows 17k...), different for every k, slow enough to be killed mid-run."""
    rows = json.loads((SAMPLES / "koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))[17 * k: 17 * k + 17]
    return Canned(numbered([(r["instruction"], r["input"], r["output"]) for r in rows]), delay=0.5) if rows else None


RUN_FROM_RECIPE = ("import sys; from kotune.config import load_config; from kotune.selfinstruct.config import "
                   "SelfInstructConfig; from kotune.selfinstruct.run import run; "
                   "run(load_config(SelfInstructConfig, sys.argv[1]))")


def test_killed_and_restarted_loses_nothing_and_repeats_nothing(tmp_path):
    out = tmp_path / "gen.jsonl"
    target = 150
    with StubTeacher(fallback=sample_reply) as stub:
        recipe = out.with_suffix(".recipe.yaml")
        config(stub, out, num_instructions=target)  # writes the recipe the child process reads
        proc = subprocess.Popen([sys.executable, "-c", RUN_FROM_RECIPE, str(recipe)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 120
        while (not out.exists() or out.read_bytes().count(b"\n") < 30) and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        at_kill = out.read_bytes()
        whole_lines = at_kill[: at_kill.rfind(b"\n") + 1]
        assert 30 <= whole_lines.count(b"\n") < target, "the run was not killed in the middle"

        summary = run(load_config(SelfInstructConfig, str(recipe)), log=lambda *_: None)

    final = out.read_bytes()
    assert final.startswith(whole_lines)  # every record accepted before the kill is still there, in place
    records = [json.loads(line) for line in final.decode("utf-8").splitlines()]
    assert len(records) == target == summary.total
    instructions = [r["instruction"] for r in records]
    assert len(set(instructions)) == target
    seeds = [t.instruction for t in load_seed_tasks(SEEDS)]
    assert all(d is None for d in dedup(instructions, 0.7, pool=seeds)), "a near-duplicate got in"


def test_cli_selfinstruct_then_data_dedup(tmp_path):
    out = tmp_path / "gen.jsonl"
    with StubTeacher([Canned(REPLY_A), Canned(REPLY_B, "length")]) as stub:
        config(stub, out, num_instructions=100, max_requests=2)
        result = subprocess.run([sys.executable, "-m", "kotune.cli", "selfinstruct", str(out.with_suffix(".recipe.yaml")),
                                 "teacher.concurrency=1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "selfinstruct: 4 new records" in result.stdout and "duplicate 2" in result.stdout
    # a copy with near-duplicates added back is cleaned by `kotune data dedup`
    records = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                             for r in records + [{**records[0], "instruction": records[0]["instruction"] + "!!"}]),
                     encoding="utf-8")
    clean = tmp_path / "clean.jsonl"
    result = subprocess.run([sys.executable, "-m", "kotune.cli", "data", "dedup", str(noisy), "--threshold", "0.7",
                             "--out", str(clean)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{noisy}:5: dropped" in result.stdout and "~ line 1" in result.stdout
    assert len(clean.read_text(encoding="utf-8").splitlines()) == 4
