"""`kotune serve` as a real process on 127.0.0.1: the official `openai` client, API keys, malformed requests,
disconnects and a responsive event loop. The load test is test_serve_load.py."""

from __future__ import annotations

import threading
import time

import httpx2 as httpx
import openai
import pytest
from serve_helpers import listening_addresses, make_chat_model, serve

pytestmark = pytest.mark.slow
KEY = "sk-e2e-test"


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-api")
    model = make_chat_model(tiny_llama, root / "tiny-chat")
    with serve(model, root / "server.log", "--api-key", KEY, "--max-tokens", "2000") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


def auth() -> dict:
    return {"Authorization": f"Bearer {KEY}"}


def test_binds_loopback_only_by_default(server):
    assert listening_addresses(server.port) == {"127.0.0.1"}


def test_openai_client_gets_a_completion_and_a_streamed_one(client, server):
    messages = [{"role": "user", "content": "한국의 수도는 어디인가요?"}]
    (model,) = [m.id for m in client.models.list()]
    assert model == server.model
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 12
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    legacy = client.completions.create(model=model, prompt="김치는", max_tokens=5, temperature=0)
    assert legacy.choices[0].finish_reason in ("stop", "length") and legacy.usage.completion_tokens <= 5


def test_without_the_key_is_401(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "안녕"}])
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"model": server.model, "messages": []})
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"


def test_malformed_requests_get_openai_shaped_4xx(client, server):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "안녕"}],
                                       temperature=7)
    assert e.value.status_code == 400 and e.value.param == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "안녕"}])
    for body in (b"{oops", b'{"model": 1}', b'{"model": "m", "messages": "hi"}'):
        response = httpx.post(f"{server.url}/v1/chat/completions", content=body,
                              headers={**auth(), "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]


def long_stream(server, max_tokens: int = 2000):
    body = {"model": server.model, "messages": [{"role": "user", "content": "길게"}], "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True}
    return httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=auth(), timeout=60)


def wait_for(predicate, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def assert_one_generation_cancelled(server, before: dict) -> None:
    """Since the `before` stats, one generation was cancelled (not completed) by its client's disconnect."""
    wait_for(lambda: server.stats()["running"] == 0, timeout=5)
    after = server.stats()
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["completed"] == before["completed"]
    assert after["requests"]["disconnected"] == before["requests"]["disconnected"] + 1
    assert after["requests"]["active"] == 0


def test_client_disconnect_stops_its_generation(server):
    before = server.stats()
    with long_stream(server) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        wait_for(lambda: server.stats()["running"] == 1)
    # leaving the block closed the connection after a few tokens of 2000
    assert_one_generation_cancelled(server, before)


def test_client_that_gives_up_on_a_whole_reply_stops_its_generation(server):
    before = server.stats()
    body = {"model": server.model, "messages": [{"role": "user", "content": "길게"}], "max_tokens": 2000,
            "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):  # the client hangs up after 0.5 s, long before 2000 tokens
        httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=auth(), timeout=0.5)
    assert_one_generation_cancelled(server, before)


def read_until_closed(response) -> None:
    try:
        for _ in response.iter_lines():
            pass
    except httpx.HTTPError:  # we close the connection under it
        pass


def test_event_loop_answers_while_generating(server):
    latencies = []
    with long_stream(server) as response:
        threading.Thread(target=read_until_closed, args=(response,), daemon=True).start()
        wait_for(lambda: server.stats()["running"] == 1)
        for _ in range(10):
            start = time.monotonic()
            assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
            latencies.append(time.monotonic() - start)
        assert server.stats()["running"] == 1, "the long request must still be decoding while we measure"
    assert max(latencies) < 1.0, latencies
