"""`kotune eval judge` against a scripted judge over real HTTP: both orders, inconsistent -> tie, unparsed after
retries, the cache (a rerun asks nothing, a new contestant only its pairs, a torn cache line is re-asked), and
the win rate's interval."""

import json

import pytest
from judge_stub import ScriptedServer, shown

from kotune.common.stats import mean_interval
from kotune.eval.config import JudgeConfig
from kotune.eval.judge import JUDGMENTS_JSONL, run

RANK = {"good": 3, "bad": 2, "worse": 1}
PARSE_RETRIES = 2
# question tag -> (category, how the judge answers it)
QUESTIONS = {
    "WIN1": "math", "WIN2": "math", "WIN3": "math",  # the better answer, whichever order
    "BIASED": "writing",  # always the answer shown first: the two orders disagree
    "TIE": "writing",  # [[C]]
    "GARBAGE": "stem",  # never a verdict
    "RETRY": "stem",  # no verdict at temperature 0, a real one when asked again (sampling)
    "BOTH": "stem",  # two verdicts in one reply: ambiguous, never guessed
}


def scripted_judge(prompt: str, temperature: float) -> str:
    answers = shown(prompt)
    better = "A" if RANK[answers["A"].split(":")[0]] > RANK[answers["B"].split(":")[0]] else "B"
    tag = next(t for t in QUESTIONS if f"질문 {t}." in prompt)
    if tag.startswith("WIN") or (tag == "RETRY" and temperature > 0):
        return f"A와 B를 비교했습니다.\n[[{better}]]"
    return {"BIASED": "먼저 나온 답이 낫다.\n[[A]]", "TIE": "둘 다 비슷하다. [[C]]",
            "BOTH": "[[A]] 또는 [[B]]"}.get(tag, "둘 다 좋은 답변이네요.")


@pytest.fixture()
def questions(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"id": tag, "category": cat, "prompt": f"질문 {tag}. 답해 주세요."},
                                       ensure_ascii=False) + "\n" for tag, cat in QUESTIONS.items()), encoding="utf-8")
    return path


def judge_cfg(server, questions, out, *models, **kw):
    return JudgeConfig(models=[f"{m}@{server.url}" for m in models], judge_url=server.url, judge_model="judge",
                       judge_key_env=None, questions=str(questions), out=str(out), parse_retries=PARSE_RETRIES,
                       concurrency=3, backoff_s=0.01, max_backoff_s=0.05, max_retries=1, timeout_s=10, **kw)


def outcomes(results, opponent="bad"):
    return {r["question_id"]: (r["outcome"], r["inconsistent"]) for r in results["outcomes"] if r["opponent"] == opponent}


# judge requests for one pair: 2 orders x (1 each, or 1 + retries where no verdict comes, 2 for RETRY)
PAIR_REQUESTS = 2 * (3 + 1 + 1 + (1 + PARSE_RETRIES) + 2 + (1 + PARSE_RETRIES))


def test_both_orders_ties_unparsed_and_the_interval(tmp_path, questions):
    with ScriptedServer(scripted_judge) as server:
        results = run(judge_cfg(server, questions, tmp_path / "out", "good", "bad"))
        asked = [r["messages"][0]["content"] for r in server.judge_requests()]
    assert len(asked) == results["requests"] == PAIR_REQUESTS
    # every question was shown in both orders
    orders = {(q, tuple(a.split(":")[0] for a in (shown(p)["A"], shown(p)["B"])))
              for p in asked for q in QUESTIONS if f"질문 {q}." in p}
    assert orders == {(q, o) for q in QUESTIONS for o in (("good", "bad"), ("bad", "good"))}
    assert outcomes(results) == {"WIN1": ("win", False), "WIN2": ("win", False), "WIN3": ("win", False),
                                 "BIASED": ("tie", True), "TIE": ("tie", False), "GARBAGE": ("unparsed", False),
                                 "RETRY": ("win", False), "BOTH": ("unparsed", False)}
    (pair,) = results["pairs"]
    assert (pair["win"], pair["tie"], pair["loss"], pair["unparsed"], pair["failed"], pair["inconsistent"]) == \
           (4, 2, 0, 2, 0, 1)
    # the win rate is the mean of 1 / 0.5 / 0 over the decided questions, its interval the shared bootstrap's
    assert pair["win_rate"] == mean_interval([1, 1, 1, 1, 0.5, 0.5], seed=0)
    assert pair["win_rate"]["value"] == pytest.approx(5 / 6, abs=1e-12)
    assert pair["win_rate"]["low"] < 5 / 6 <= pair["win_rate"]["high"] <= 1
    assert pair["categories"]["math"]["win_rate"] == {"value": 1.0, "low": 1.0, "high": 1.0, "n": 3}
    assert pair["categories"]["stem"]["unparsed"] == 2
    lines = [json.loads(x) for x in (tmp_path / "out" / JUDGMENTS_JSONL).read_text(encoding="utf-8").splitlines()]
    garbage = [x for x in lines if x["question_id"] == "GARBAGE"]
    assert [(x["verdict"], x["attempts"]) for x in garbage] == [(None, 1 + PARSE_RETRIES)] * 2
    report = (tmp_path / "out" / "judge.md").read_text(encoding="utf-8")
    assert "| good | bad | 8 | 4 | 2 | 0 | 2 | 0 | 1 |" in report and "83.3%" in report
    assert (tmp_path / "out" / "judge.png").stat().st_size > 0


def test_cache_rerun_new_contestant_and_torn_line(tmp_path, questions):
    out = tmp_path / "out"
    with ScriptedServer(scripted_judge) as server:
        first = run(judge_cfg(server, questions, out, "good", "bad"))
        n = len(server.requests)
        again = run(judge_cfg(server, questions, out, "good", "bad"))
        assert len(server.requests) == n and again["requests"] == 0  # answers and judgments all cached
        assert again["pairs"] == first["pairs"]

        before = len(server.requests)
        more = run(judge_cfg(server, questions, out, "good", "bad", "worse"))
        new = server.requests[before:]
        # the new contestant answers every question once, and the judge sees only the new pair
        assert sum(r["model"] == "worse" for r in new) == len(QUESTIONS)
        assert sum(r["model"] in ("good", "bad") for r in new) == 0
        assert more["requests"] == PAIR_REQUESTS
        assert all("worse:" in r["messages"][0]["content"] for r in new if r["model"] == "judge")
        assert outcomes(more, "worse") == outcomes(first, "bad")

        # a run killed mid-write: the last line is cut in half; the next run drops it and asks only that one again
        path = out / JUDGMENTS_JSONL
        data = path.read_bytes()
        last_start = data.rstrip(b"\n").rfind(b"\n") + 1
        path.write_bytes(data[: last_start + (len(data) - last_start) // 2])
        lost = json.loads(data[last_start:])
        before = len(server.requests)
        resumed = run(judge_cfg(server, questions, out, "good", "bad", "worse"))
        asked = {r["messages"][0]["content"] for r in server.requests[before:]}
        assert len(asked) == 1 and resumed["requests"] == lost["attempts"]
        assert resumed["pairs"] == more["pairs"]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(x) for x in lines) and len(lines) == 2 * len(QUESTIONS) * 2


def test_a_bad_cache_line_in_the_middle_is_named_not_repaired(tmp_path, questions):
    out = tmp_path / "out"
    out.mkdir()
    (out / JUDGMENTS_JSONL).write_text('{"key": "k1", "verdict": "A"}\nnot json\n{"key": "k2"}\n', encoding="utf-8")
    with ScriptedServer(scripted_judge) as server:
        with pytest.raises(ValueError, match=r"judgments.jsonl:2"):
            run(judge_cfg(server, questions, out, "good", "bad"))
    assert "not json" in (out / JUDGMENTS_JSONL).read_text(encoding="utf-8")


def test_a_missing_judge_key_is_named_before_any_work(tmp_path, questions, monkeypatch):
    monkeypatch.delenv("KOTUNE_JUDGE_TEST_KEY", raising=False)
    with ScriptedServer(scripted_judge) as server:
        with pytest.raises(ValueError, match="judge_key_env: the environment variable KOTUNE_JUDGE_TEST_KEY is not set"):
            run(judge_cfg(server, questions, tmp_path / "out", "good", "bad").__class__(
                **{**judge_cfg(server, questions, tmp_path / "out", "good", "bad").__dict__,
                   "judge_key_env": "KOTUNE_JUDGE_TEST_KEY"}))
        assert server.requests == []


def test_failed_requests_are_counted_not_cached_and_asked_again(tmp_path, questions):
    out = tmp_path / "out"
    down = lambda prompt, t: None if "질문 WIN1." in prompt else scripted_judge(prompt, t)  # noqa: E731
    with ScriptedServer(down) as server:
        results = run(judge_cfg(server, questions, out, "good", "bad"))
    assert outcomes(results)["WIN1"] == ("failed", False) and results["pairs"][0]["failed"] == 1
    assert results["failed_requests"] == 2  # both orders, each after max_retries + 1 tries
    assert results["pairs"][0]["win_rate"]["n"] == 5  # left out of the win rate
    with ScriptedServer(scripted_judge) as server:
        again = run(judge_cfg(server, questions, out, "good", "bad"))
        assert len(server.judge_requests()) == 2 and outcomes(again)["WIN1"] == ("win", False)


@pytest.mark.parametrize("change, message", [
    ({"judge_key_env": "sk-proj-abc123"}, "judge_key_env: expected the NAME of an environment variable"),
    ({"models": ["a", "b@http://h/v1@sk_live_1"]}, "endpoint b@http://h/v1: expected the NAME"),
    ({"models": ["a", "a"]}, "models: a given twice"),
    ({"models": ["a"]}, "at least two contestants"),
    ({"judge_url": "localhost:8000"}, "judge_url: 'localhost:8000' is not an http"),
])
def test_config_refuses_keys_repeats_and_a_lone_contestant(change, message):
    base = dict(models=["a", "b"], judge_url="http://127.0.0.1:1/v1", judge_model="judge")
    with pytest.raises(ValueError, match=message):
        JudgeConfig(**{**base, **change})
