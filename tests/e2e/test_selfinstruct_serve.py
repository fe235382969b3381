"""`kotune selfinstruct` against a real `kotune serve` process on a tiny random model: every request is answered
over HTTP with the key, and the random text is counted as malformed instead of breaking the run."""

import json
from pathlib import Path

import pytest
from serve_helpers import make_chat_model, serve

from kotune.selfinstruct.config import SelfInstructConfig, TeacherConfig
from kotune.selfinstruct.run import run

pytestmark = pytest.mark.slow
KEY_ENV = "KOTUNE_API_KEY"  # read by `kotune serve`, and named as the teacher's key variable


def test_selfinstruct_against_kotune_serve_on_a_tiny_model(tiny_llama, tmp_path, monkeypatch):
    model = make_chat_model(tiny_llama, tmp_path / "tiny-chat")
    monkeypatch.setenv(KEY_ENV, "sk-selfinstruct-e2e")  # the server and the teacher both read it
    log = tmp_path / "serve.log"
    with serve(model, log, timeout=240) as server:
        # A short header and seed keep the prompt inside the tiny model's 2,048-token context.
        header = tmp_path / "header.txt"
        header.write_text("한국어 작업을 만드세요.\n", encoding="utf-8")
        seeds = tmp_path / "seeds.jsonl"
        seeds.write_text(json.dumps({"instruction": "인사말을 쓰세요.", "input": "", "output": "안녕하세요."},
                                    ensure_ascii=False) + "\n", encoding="utf-8")
        cfg = SelfInstructConfig(
            output=str(tmp_path / "gen.jsonl"), seeds=[str(seeds)], prompt_file=str(header), num_prompt_instructions=1,
            num_instructions=50, max_requests=4, max_failed_requests=1,
            teacher=TeacherConfig(base_url=f"{server.url}/v1", model=model.name, api_key_env=KEY_ENV,
                                  max_tokens=32, concurrency=2, timeout_s=120, max_retries=2, backoff_s=0.2))
        summary = run(cfg, log=lambda *_: None)
    # every request was answered (a 4xx would have stopped the run, a 5xx or timeout would count as failed)
    assert (summary.requests, summary.failed_requests) == (4, 0), log.read_text(errors="replace")[-3000:]
    # random tokens are not tasks: counted, never written
    assert summary.generated >= 1 and sum(summary.rejected.values()) == summary.generated - summary.new
    assert Path(cfg.output).read_text(encoding="utf-8").count("\n") == summary.new
