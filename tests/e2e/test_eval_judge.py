"""`kotune eval judge` end to end: a kotune model folder (answered in-process) against a real `kotune serve`
process, which is also the judge. A tiny random model writes no verdict: every judgment must be retried, then
counted as unparsed, and the run must finish with no win rate rather than a guessed one."""

import json

import pytest
from serve_helpers import make_chat_model, serve

from kotune.cli import main

pytestmark = pytest.mark.slow
KEY_ENV = "KOTUNE_API_KEY"  # read by `kotune serve`, and named as the judge's and the endpoint's key variable


def test_judge_with_kotune_serve_as_contestant_and_judge(tiny_llama, tiny_neox, tmp_path, monkeypatch, capsys):
    model = make_chat_model(tiny_llama, tmp_path / "tiny-chat")
    local = make_chat_model(tiny_neox, tmp_path / "local-chat")  # another model: its answers differ
    monkeypatch.setenv(KEY_ENV, "sk-judge-e2e")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in [
        {"id": "m1", "category": "math", "prompt": "3 더하기 4는?", "reference": "7"},
        {"id": "w1", "category": "writing", "prompt": "봄에 대한 짧은 시를 써 줘."}]), encoding="utf-8")
    out = tmp_path / "out"
    with serve(model, tmp_path / "serve.log", timeout=240) as server:
        args = ["eval", "judge", str(local), f"{model.name}@{server.url}/v1@{KEY_ENV}",
                "--judge-url", f"{server.url}/v1", "--judge-model", model.name, "--judge-key-env", KEY_ENV,
                "--questions", str(questions), "--out", str(out), "--max-new-tokens", "8", "--judge-max-tokens", "8",
                "--parse-retries", "1", "--concurrency", "2", "--max-retries", "1", "--timeout-s", "120",
                "--device", "cpu"]
        assert main(args) == 0, server.log_tail()
        results = json.loads((out / "judge.json").read_text(encoding="utf-8"))
        assert main(args) == 0  # everything cached: no request at all
        again = json.loads((out / "judge.json").read_text(encoding="utf-8"))
    (pair,) = results["pairs"]
    assert (pair["model"], pair["opponent"]) == ("local-chat", "tiny-chat")
    assert pair["questions"] == 2 and pair["failed"] == 0
    # random tokens hold no [[A]]/[[B]]/[[C]] (or, very rarely, by chance): whatever was not read is unparsed
    judgments = [json.loads(x) for x in (out / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]
    answers = [json.loads(x) for x in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(a["contestant"] for a in answers) == ["local-chat", "local-chat", "tiny-chat", "tiny-chat"]
    # each question shown in both orders; two equal answers make one prompt, asked once
    by_question = {q: {a["answer"] for a in answers if a["question_id"] == q} for q in ("m1", "w1")}
    assert len(judgments) == sum(2 if len(texts) == 2 else 1 for texts in by_question.values())
    assert all(j["attempts"] == (1 if j["verdict"] else 2) for j in judgments)
    unread = {j["question_id"] for j in judgments if j["verdict"] is None}
    assert pair["unparsed"] == len(unread)
    assert pair["win"] + pair["tie"] + pair["loss"] + pair["unparsed"] == 2
    if pair["unparsed"] == 2:
        assert pair["win_rate"] is None and "—" in (out / "judge.md").read_text(encoding="utf-8")
    assert results["requests"] == sum(j["attempts"] for j in judgments) and again["requests"] == 0
    assert (out / "judge.png").stat().st_size > 0
    assert "sk-judge-e2e" not in capsys.readouterr().out
