"""Moderation in the OpenAI-compatible app, in process: a flagged request is answered `content_filter` (whole and
streamed, chat and completions) and never reaches the engine; failing and slow checks are decided by
--moderation-on-error; /health counts; /v1/moderations answers in OpenAI's shape; `model:` with a tiny classifier."""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kotune_test_paths import single_torch_thread

from kotune.serve.moderation import ModelCheck, Verdict, WordsCheck
from kotune.serve.openai_api import ServeConfig, create_app

MODEL = "tiny-chat"
MESSAGE = "그 요청에는 답할 수 없어요."


class SpyEngine:
    """The real engine, counting what reaches it."""

    def __init__(self, engine):
        self._engine, self.submitted = engine, 0

    def submit(self, *args, **kw):
        self.submitted += 1
        return self._engine.submit(*args, **kw)

    def __getattr__(self, name):
        return getattr(self._engine, name)


class Broken:
    name, categories = "broken", []

    def check(self, texts):
        raise ConnectionError("moderation endpoint unreachable")


class Slow:
    name, categories = "slow", []

    def __init__(self):
        self.release = threading.Event()

    def check(self, texts):
        self.release.wait(30)
        return [Verdict(False) for _ in texts]


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("[hate]\n바보\n", encoding="utf-8")
    return WordsCheck(path)


def make_client(engine, checks, **cfg):
    from starlette.testclient import TestClient

    config = ServeConfig(model="tiny-chat", served_model_name=MODEL, max_tokens=32, moderation_message=MESSAGE,
                         **cfg)
    spy = SpyEngine(engine)
    return TestClient(create_app(spy, config, checks)), spy


def chat(text: str, **kw) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 4, **kw}


def events(response) -> list:
    payloads = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    assert payloads[-1] == "[DONE]", response.text
    return [json.loads(e) for e in payloads[:-1]]


def test_flagged_requests_get_content_filter_and_never_reach_the_engine(engine, words):
    client, spy = make_client(engine, [words], log_flagged_text=False)
    whole = client.post("/v1/chat/completions", json=chat("이 바보야")).json()
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["finish_reason"] == "content_filter"
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": MESSAGE}
    assert whole["usage"]["completion_tokens"] == 0

    streamed = events(client.post("/v1/chat/completions", json=chat("바보", stream=True,
                                                                   stream_options={"include_usage": True})))
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in streamed if e["choices"])
    assert text == MESSAGE
    assert [e["choices"][0].get("finish_reason") for e in streamed if e["choices"]][-1] == "content_filter"
    assert streamed[-1]["usage"]["completion_tokens"] == 0

    legacy = client.post("/v1/completions", json={"model": MODEL, "prompt": "바보는", "max_tokens": 4}).json()
    assert legacy["choices"][0] == {"index": 0, "text": MESSAGE, "finish_reason": "content_filter", "logprobs": None}
    legacy_streamed = events(client.post("/v1/completions", json={"model": MODEL, "prompt": "바보", "stream": True}))
    assert legacy_streamed[-1]["choices"][0]["finish_reason"] == "content_filter"

    # an earlier user turn is checked too: a flagged message cannot hide in the history
    history = {"model": MODEL, "max_tokens": 4, "messages": [
        {"role": "user", "content": "바보"}, {"role": "assistant", "content": "네"}, {"role": "user", "content": "안녕"}]}
    assert client.post("/v1/chat/completions", json=history).json()["choices"][0]["finish_reason"] == "content_filter"
    assert spy.submitted == 0

    clean = client.post("/v1/chat/completions", json=chat("안녕하세요")).json()
    assert clean["choices"][0]["finish_reason"] in ("stop", "length") and spy.submitted == 1
    moderation = client.get("/health").json()["moderation"]
    assert moderation == {"checked": 6, "flagged": 5, "errors": 0, "allowed_on_error": 0, "categories": {"hate": 5}}


def test_flagged_log_line_has_no_user_text_unless_asked(engine, words, caplog):
    for log_text in (False, True):
        client, _ = make_client(engine, [words], log_flagged_text=log_text)
        caplog.clear()
        with caplog.at_level("WARNING", logger="kotune.serve.moderation"):
            client.post("/v1/chat/completions", json=chat("비밀스러운 바보 문장"))
        (line,) = [r.getMessage() for r in caplog.records]
        assert "chat request chatcmpl-" in line and "hate" in line
        assert ("비밀스러운 바보 문장" in line) == log_text


def test_a_failing_check_blocks_or_allows_as_configured(engine, words):
    blocked, spy = make_client(engine, [words, Broken()])
    reply = blocked.post("/v1/chat/completions", json=chat("안녕하세요")).json()
    assert reply["choices"][0]["finish_reason"] == "content_filter" and spy.submitted == 0
    assert blocked.get("/health").json()["moderation"]["categories"] == {"moderation_error": 1}
    # a flag from a working check still counts as a flag, not as an error
    assert blocked.post("/v1/chat/completions", json=chat("바보")).json()["choices"][0]["finish_reason"] == \
        "content_filter"
    assert blocked.get("/health").json()["moderation"]["categories"] == {"moderation_error": 1, "hate": 1}

    allowed, spy = make_client(engine, [Broken()], moderation_on_error="allow")
    reply = allowed.post("/v1/chat/completions", json=chat("안녕하세요")).json()
    assert reply["choices"][0]["finish_reason"] in ("stop", "length") and spy.submitted == 1
    assert allowed.get("/health").json()["moderation"] == {"checked": 1, "flagged": 0, "errors": 1,
                                                           "allowed_on_error": 1, "categories": {}}


def test_a_slow_check_times_out_while_the_server_keeps_answering(engine):
    slow = Slow()
    client, spy = make_client(engine, [slow], moderation_timeout=0.5)
    try:
        started = time.monotonic()
        reply = client.post("/v1/chat/completions", json=chat("안녕하세요")).json()
        assert reply["choices"][0]["finish_reason"] == "content_filter"
        # the deadline, not the check, decided: 0.5 s plus the request's own work, far below the check's 30 s
        assert time.monotonic() - started < 10
        assert client.get("/health").json()["moderation"]["errors"] == 1 and spy.submitted == 0
    finally:
        slow.release.set()


def test_v1_moderations_answers_in_openais_shape(engine, words):
    client, spy = make_client(engine, [words])  # the official client reading it: tests/e2e/test_serve_moderation.py
    body = client.post("/v1/moderations", json={"input": ["바보야", "안녕"]}).json()
    assert body["id"].startswith("modr-") and body["model"] == MODEL
    assert [r["flagged"] for r in body["results"]] == [True, False]
    assert body["results"][0]["categories"] == {"hate": True}
    assert body["results"][1]["category_scores"] == {"hate": 0.0}
    parts = client.post("/v1/moderations", json={"input": [{"type": "text", "text": "바보"}]}).json()
    assert parts["results"][0]["flagged"]
    assert client.post("/v1/moderations", json={"input": []}).status_code == 400
    # with no local check there is no such route: kotune would only relay someone else's answer
    without, _ = make_client(engine, [])
    assert without.post("/v1/moderations", json={"input": "바보"}).status_code == 404
    assert "moderation" not in without.get("/health").json() and spy.submitted == 0


# ------------------------------------------------------------------------------------------------- model:

FLAG, CLEAN = "바보", "친구"
SENTENCES = ["오늘 {} 만났어요", "{} 같은 소리 하지 마", "우리 {} 정말 좋아", "그 {} 이야기 들었어?", "{}",
             "내일 {} 집에 가요", "저 사람은 {} 맞아요", "{} 에게 편지를 썼다"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared CPU: one torch thread is ~20x faster than idle OpenMP threads spinning."""
    with single_torch_thread():
        yield


@pytest.fixture(scope="module")
def classifier(one_thread, tiny_neox, tmp_path_factory):
    """A tiny GPT-NeoX sequence classifier trained (seeded, a few dozen steps) on one rule: a sentence holding
    바보 is `insult`, the same sentence with 친구 is `clean`."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, GPTNeoXForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_neox)
    config = AutoConfig.from_pretrained(tiny_neox, num_labels=2, id2label={0: "clean", 1: "insult"},
                                        label2id={"clean": 0, "insult": 1})
    model = GPTNeoXForSequenceClassification.from_pretrained(tiny_neox, config=config)
    texts = [s.format(w) for s in SENTENCES for w in (FLAG, CLEAN)]
    labels = torch.tensor([int(w == FLAG) for s in SENTENCES for w in (FLAG, CLEAN)])
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = model(**batch, labels=labels).loss
        if loss.item() < 0.02:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"the tiny classifier did not learn its rule (loss {loss.item():.3f})"
    out = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model_check(classifier):
    return ModelCheck(str(classifier), [], 0.5)


def test_model_check_flags_by_label_and_threshold(classifier, model_check):
    check = model_check
    assert check.categories == ["insult"]  # every label but id 0
    texts = [s.format(w) for s in SENTENCES[:4] for w in (FLAG, CLEAN)]
    verdicts = check.check(texts)
    assert [v.flagged for v in verdicts] == [True, False] * 4
    assert all(set(v.scores) == {"clean", "insult"} for v in verdicts)
    assert all(v.categories == {"insult": v.flagged} for v in verdicts)
    # the threshold decides on the same scores: above the highest score nothing flags
    strict = copy.copy(check)  # the same model: only the threshold differs
    strict.threshold = max(v.scores["insult"] for v in verdicts) * (1 + 1e-6)
    assert strict.threshold <= 1 and not any(v.flagged for v in strict.check(texts))
    with pytest.raises(ValueError, match=r"labels \['toxic'\] are not the model's"):
        ModelCheck(str(classifier), ["toxic"], 0.5)


def test_model_check_in_the_app(engine, model_check):
    client, spy = make_client(engine, [model_check])
    reply = client.post("/v1/chat/completions", json=chat(SENTENCES[0].format(FLAG))).json()
    assert reply["choices"][0]["finish_reason"] == "content_filter" and spy.submitted == 0
    body = client.post("/v1/moderations", json={"input": SENTENCES[1].format(CLEAN)}).json()
    assert body["results"][0]["flagged"] is False and set(body["results"][0]["category_scores"]) == {"clean",
                                                                                                   "insult"}


@pytest.fixture(scope="module")
def words_client(engine, words):
    return make_client(engine, [words])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.text(st.integers(0xAC00, 0xD7A3).map(chr), max_size=5),
       after=st.text(st.integers(0xAC00, 0xD7A3).map(chr), max_size=5),
       insert=st.booleans(), stream=st.booleans(), route=st.sampled_from(["chat", "text"]))
def test_any_request_is_refused_exactly_when_a_user_message_holds_a_term(words_client, before, after, insert,
                                                                         stream, route):
    client, spy = words_client
    text = before + ("바보" if insert else " ") + after
    expected = "바보" in text
    if route == "chat":
        body, path = chat(text, max_tokens=1, stream=stream), "/v1/chat/completions"
    else:
        body, path = {"model": MODEL, "prompt": text, "max_tokens": 1, "stream": stream}, "/v1/completions"
    submitted = spy.submitted
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    if stream:
        finish = [c["choices"][0].get("finish_reason") for c in events(response) if c["choices"]][-1]
    else:
        finish = response.json()["choices"][0]["finish_reason"]
    assert (finish == "content_filter") == expected
    assert spy.submitted == submitted + (not expected)
