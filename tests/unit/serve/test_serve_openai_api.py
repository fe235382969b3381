"""The OpenAI-compatible app, in process: response shapes, SSE framing, auth, limits, validation and 429."""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import re

import pytest

from kotune.models.generate import SamplingParams
from kotune.serve.openai_api import ServeConfig, create_app

KEY = "sk-test"
MODEL = "tiny-chat"


@pytest.fixture(scope="module")
def client(engine, chat_model):
    from starlette.testclient import TestClient

    cfg = ServeConfig(model=str(chat_model), api_key=KEY, served_model_name=MODEL, max_tokens=64,
                      max_prompt_tokens=200)
    return TestClient(create_app(engine, cfg), headers={"Authorization": f"Bearer {KEY}"})


def chat_body(**kw) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "안녕하세요"}], "max_tokens": 8, **kw}


def sse_events(text: str) -> list[str]:
    """The data payloads of an SSE body; fails if anything but `data:` events is in it."""
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), text
    return [e.removeprefix("data: ") for e in events]


def assert_openai_error(response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_models_lists_the_served_model(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [MODEL]


@pytest.mark.parametrize("headers", [{"Authorization": ""}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {KEY}"}])
def test_v1_routes_need_the_key(client, headers):
    for method, path in [("get", "/v1/models"), ("post", "/v1/chat/completions"), ("post", "/v1/completions")]:
        response = getattr(client, method)(path, headers=headers, **({"json": chat_body()} if method == "post" else {}))
        error = assert_openai_error(response, 401)
        assert error["code"] in ("missing_api_key", "invalid_api_key")


def test_health_and_page_are_open_without_key(client):
    assert client.get("/health", headers={"Authorization": ""}).json()["status"] == "ok"
    assert client.get("/", headers={"Authorization": ""}).status_code == 200


def test_chat_completion(client):
    body = client.post("/v1/chat/completions", json=chat_body(seed=1)).json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 8 or choice["finish_reason"] == "stop"


def test_chat_stream_is_sse_ending_in_done_and_matches_the_whole_reply(client):
    before = client.get("/health").json()["requests"]
    whole = client.post("/v1/chat/completions", json=chat_body(temperature=0, ignore_eos=True)).json()
    response = client.post("/v1/chat/completions", json=chat_body(temperature=0, ignore_eos=True, stream=True,
                                                                  stream_options={"include_usage": True}))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finishes = [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]
    finishes = [f for f in finishes if f]
    assert finishes == ["length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    after = client.get("/health").json()["requests"]  # one whole reply and one stream, both to the end
    assert after["accepted"] == before["accepted"] + 2 and after["finished"] == before["finished"] + 2
    assert after["active"] == 0 and after["disconnected"] == before["disconnected"]


def test_text_completion_whole_and_streamed(client):
    body = client.post("/v1/completions", json={"model": MODEL, "prompt": "한국어는", "temperature": 0}).json()
    assert body["object"] == "text_completion"
    assert body["usage"]["completion_tokens"] <= 16  # OpenAI's default max_tokens for completions
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "한국어는", "temperature": 0,
                                                     "stream": True})
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert text == body["choices"][0]["text"]


@pytest.mark.parametrize("body, param, words", [
    (chat_body(temperature=5), "temperature", "less than or equal to 2"),
    (chat_body(top_p=0), "top_p", "greater than 0"),
    (chat_body(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    (chat_body(n=2), "n", "only n=1"),
    (chat_body(logprobs=True), "logprobs", "not supported"),
    (chat_body(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
    (chat_body(presence_penalty=0.5), "presence_penalty", "repetition_penalty"),
    (chat_body(messages=[]), "messages", "at least 1"),
    (chat_body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", "robot"),
    (chat_body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]), "", "last message"),
    ({"messages": [{"role": "user", "content": "a"}]}, "model", "required"),
])
def test_invalid_fields_are_400_naming_the_field(client, body, param, words):
    error = assert_openai_error(client.post("/v1/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert (error["param"] or "") == param
    assert words in error["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_malformed_bodies_are_400(client, raw):
    response = client.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    error = assert_openai_error(response, 400)
    assert "JSON" in error["message"]


def test_unknown_model_is_404(client):
    error = assert_openai_error(client.post("/v1/chat/completions", json=chat_body(model="gpt-4")), 404, "model")
    assert error["code"] == "model_not_found" and MODEL in error["message"]


def test_limits_on_max_tokens_and_prompt_length(client):
    error = assert_openai_error(client.post("/v1/chat/completions", json=chat_body(max_tokens=65)), 400, "max_tokens")
    assert "at most 64" in error["message"]
    long = chat_body(messages=[{"role": "user", "content": "안녕하세요 " * 200}])
    error = assert_openai_error(client.post("/v1/chat/completions", json=long), 400, "messages")
    assert error["code"] == "context_length_exceeded"


def test_full_queue_is_429(chat_model):
    from starlette.testclient import TestClient

    from kotune.models.generate import Engine

    eng = Engine.load(str(chat_model), max_batch_size=1, max_waiting=1, threads=1, device="cpu")
    try:
        ids = eng.encode_chat([{"role": "user", "content": "안녕"}])
        long = SamplingParams(max_new_tokens=1500, temperature=0, ignore_eos=True)
        started = queue.Queue()
        handles = [eng.submit(ids, long, started.put)]
        started.get(timeout=60)  # running: the batch (size 1) is full
        handles.append(eng.submit(ids, long, lambda out: None))  # waiting: the queue (size 1) is full
        client = TestClient(create_app(eng, ServeConfig(model=str(chat_model), served_model_name=MODEL)))
        response = client.post("/v1/chat/completions", json=chat_body())
        error = assert_openai_error(response, 429)
        assert error["code"] == "rate_limit_exceeded" and response.headers["retry-after"] == "1"
        assert client.get("/health").json()["requests"] == {
            "accepted": 0, "finished": 0, "disconnected": 0, "failed": 0, "rejected": 1, "server_errors": 0,
            "active": 0}
        for h in handles:
            h.cancel()
    finally:
        eng.close()


def test_page_has_a_csp_that_allows_exactly_its_own_script(client):
    response = client.get("/")
    assert response.headers["content-type"].startswith("text/html")
    script = re.search(r"<script>(.*?)</script>", response.text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = response.headers["content-security-policy"]
    assert f"script-src 'sha256-{digest}'" in csp and "unsafe-inline" not in csp


def test_page_renders_text_only_and_respects_ime_composition(client):
    page = client.get("/").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in page, f"{sink} would let a reply inject markup"
    assert "e.isComposing" in page


def test_server_config_checks_its_fields(chat_model):
    with pytest.raises(ValueError, match="port"):
        ServeConfig(model="m", port=70000)
    with pytest.raises(ValueError, match="api_key"):
        ServeConfig(model="m", api_key=" ")


def test_serve_on_a_busy_port_fails_before_loading_the_model(tmp_path, capsys):
    import socket

    from kotune.cli import main

    missing = str(tmp_path / "no-model")  # loading it would fail with a different message
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", missing, "--port", str(port)]) == 1
        err = capsys.readouterr().err
        assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err
        assert "no-model" not in err and "Traceback" not in err
    # the port is free again: now the same command gets as far as the model
    assert main(["serve", missing, "--port", str(port)]) == 1
    assert "no-model" in capsys.readouterr().err
