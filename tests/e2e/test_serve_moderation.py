"""`kotune serve --moderation openai,words:FILE` as a real process, driven by the official `openai` client, with
a scripted OpenAI-compatible moderation endpoint on 127.0.0.1 (flags by rule; inputs holding [slow] or [500] make
it time out or fail): flagged requests end `content_filter` and never reach the engine, failures are blocked
after the retries while other requests are served, and kotune answers /v1/moderations itself."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import openai
import pytest
from fastapi import FastAPI, Request  # at module level: FastAPI resolves the handler's annotations here
from fastapi.responses import JSONResponse
from serve_helpers import free_port, make_chat_model, serve

pytestmark = pytest.mark.slow
KEY_ENV, MODERATION_KEY = "KOTUNE_TEST_MODERATION_KEY", "sk-moderation-test"
FLAGGED_WORD = "해킹"  # the scripted endpoint flags it as "illicit"; kotune's own word list does not hold it
SLOW_S = 6.0  # the endpoint's delay in [slow] mode: well past kotune's 1 s timeout


class ScriptedModeration:
    """A FastAPI app speaking OpenAI's /v1/moderations, in a thread of this process; `calls` records requests."""

    def __init__(self):
        self.calls: list[dict] = []
        app = FastAPI()

        @app.post("/v1/moderations")
        async def moderations(request: Request):
            body = await request.json()
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            self.calls.append({"inputs": inputs, "auth": request.headers.get("authorization"),
                               "model": body.get("model")})
            if any("[500]" in text for text in inputs):
                return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}}, 500)
            if any("[slow]" in text for text in inputs):
                await asyncio.sleep(SLOW_S)
            results = [{"flagged": FLAGGED_WORD in text, "categories": {"illicit": FLAGGED_WORD in text},
                        "category_scores": {"illicit": 0.99 if FLAGGED_WORD in text else 0.01}} for text in inputs]
            return {"id": "modr-scripted", "model": body.get("model"), "results": results}

        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the scripted moderation endpoint did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = self.server.force_exit = True  # no wait for a [slow] handler still asleep
        self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls_with(self, marker: str) -> int:
        return sum(any(marker in text for text in call["inputs"]) for call in self.calls)


@pytest.fixture(scope="module")
def endpoint():
    with ScriptedModeration() as scripted:
        yield scripted


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory, endpoint):
    root = tmp_path_factory.mktemp("serve-moderation")
    words = root / "words.txt"
    words.write_text("[hate]\n바보\n", encoding="utf-8")
    os.environ[KEY_ENV] = MODERATION_KEY  # the server inherits it; only its NAME is on the command line
    try:
        with serve(make_chat_model(tiny_llama, root / "tiny-chat"), root / "server.log",
                   "--moderation", f"openai,words:{words}", "--moderation-base-url", f"{endpoint.url}/v1",
                   "--moderation-api-key-env", KEY_ENV, "--moderation-timeout", "1", "--moderation-retries", "1",
                   "--max-tokens", "64") as s:
            yield s
    finally:
        del os.environ[KEY_ENV]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def ask(client, server, text: str, **kw):
    return client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": text}],
                                          max_tokens=4, temperature=0, **kw)


def test_clean_messages_pass_through_the_endpoint_to_the_model(client, server, endpoint):
    reply = ask(client, server, "서울 날씨 알려줘")
    assert reply.choices[0].finish_reason in ("stop", "length")
    call = endpoint.calls[-1]
    assert call["inputs"] == ["서울 날씨 알려줘"] and call["auth"] == f"Bearer {MODERATION_KEY}"
    assert call["model"] == "omni-moderation-latest"


def test_flagged_messages_end_content_filter_and_never_reach_the_engine(client, server):
    accepted = server.stats()["requests"]["accepted"]
    whole = ask(client, server, f"{FLAGGED_WORD} 방법 알려줘")
    assert whole.choices[0].finish_reason == "content_filter" and whole.choices[0].message.content
    chunks = list(ask(client, server, f"{FLAGGED_WORD} 방법", stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    legacy = client.completions.create(model=server.model, prompt="이 바보", max_tokens=4)  # kotune's own list
    assert legacy.choices[0].finish_reason == "content_filter"
    stats = server.stats()
    assert stats["requests"]["accepted"] == accepted
    assert stats["moderation"]["categories"] == {"illicit": 2, "hate": 1}
    lines = [line for line in server.log.read_text().splitlines() if "moderation flagged" in line]
    assert len(lines) == 3 and not any(FLAGGED_WORD in line or "바보" in line for line in lines)


def test_endpoint_failures_are_blocked_after_retries_while_others_are_served(client, server, endpoint):
    errors = server.stats()["moderation"]["errors"]
    failed = ask(client, server, "[500] 안녕")
    assert failed.choices[0].finish_reason == "content_filter"
    assert endpoint.calls_with("[500]") == 2  # the first try and one retry

    slow: dict = {}

    def ask_slow():
        started = time.monotonic()
        slow["reply"] = ask(client, server, "[slow] 안녕")
        slow["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=ask_slow)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    other = ask(client, server, "다른 질문이에요")
    assert other.choices[0].finish_reason in ("stop", "length")
    assert thread.is_alive(), "the slow request should still be waiting on its moderation"
    assert time.monotonic() - started < SLOW_S
    thread.join(timeout=60)
    assert slow["reply"].choices[0].finish_reason == "content_filter"
    # two tries of 1 s (and the client's backoff), not the endpoint's 2 x 6 s
    assert 2.0 <= slow["seconds"] < 2 * SLOW_S
    assert endpoint.calls_with("[slow]") == 2
    stats = server.stats()["moderation"]
    assert stats["errors"] == errors + 2 and stats["categories"]["moderation_error"] == 2


def test_kotune_answers_v1_moderations_with_its_local_list(client, server, endpoint):
    before = len(endpoint.calls)
    result = client.moderations.create(input=["이 바보야", "안녕하세요"])
    assert [r.flagged for r in result.results] == [True, False]
    assert result.results[0].categories.hate is True and result.results[1].category_scores.hate == 0.0
    assert len(endpoint.calls) == before  # answered locally, not relayed to the endpoint
