"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: canned replies, scripted failures, and a record
of every request (body, headers, how many were in flight at once)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from kotune_test_paths import LocalHTTPServer


@dataclass
class Canned:
    """What the server answers to one HTTP request: a completion (`text`), or a raw `status` and `body`."""

    text: str = ""
    finish_reason: str = "stop"
    status: int = 200
    body: str | None = None  # sent as is instead of a completion (e.g. not JSON)
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


def failure(status: int, **headers: str) -> Canned:
    return Canned(status=status, body=json.dumps({"error": {"message": f"canned {status}", "type": "test"}}),
                  headers=headers)


class StubTeacher(LocalHTTPServer):
    """Answers HTTP requests in arrival order from `script` (a list, used up first), then from `fallback(k)`
    where k counts completions served by `fallback` so far (None from it: HTTP 500)."""

    def __init__(self, script: list[Canned] | None = None, fallback: Callable[[int], Canned | None] | None = None):
        self.script = list(script or [])
        self.fallback = fallback
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._served = 0
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def base_url(self) -> str:  # the name self-instruct's recipe gives it
        return self.url

    def _next(self) -> Canned:
        with self._lock:
            if self.script:
                return self.script.pop(0)
            k, self._served = self._served, self._served + 1
        canned = self.fallback(k) if self.fallback else None
        return canned or failure(500)

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub._lock:
                    stub.requests.append({"path": self.path, "body": body,
                                          "headers": {k.lower(): v for k, v in self.headers.items()}})
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    canned = stub._next()
                    time.sleep(canned.delay)
                    self._answer(canned, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this request (cancelled, or its process was killed)
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def _answer(self, canned: Canned, request: dict) -> None:
                if canned.body is not None:
                    payload = canned.body.encode()
                elif self.path.endswith("/chat/completions"):
                    payload = json.dumps({
                        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": request.get("model"),
                        "choices": [{"index": 0, "finish_reason": canned.finish_reason,
                                     "message": {"role": "assistant", "content": canned.text}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }, ensure_ascii=False).encode()
                else:
                    payload = json.dumps({
                        "id": "cmpl-stub", "object": "text_completion", "created": 0, "model": request.get("model"),
                        "choices": [{"index": 0, "text": canned.text, "finish_reason": canned.finish_reason,
                                     "logprobs": None}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }, ensure_ascii=False).encode()
                self.send_response(canned.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in canned.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def numbered(tasks: list[tuple[str, str, str]], first: int = 4, *, preamble: str = "") -> str:
    """A reply in the prompt's own format: `###`-separated `N. 명령어:` / `N. 입력:` / `N. 출력:` blocks."""
    blocks = [preamble] if preamble else []
    for i, (instruction, task_input, output) in enumerate(tasks, first):
        blocks.append(f"{i}. 명령어: {instruction}\n{i}. 입력:\n{task_input or '<noinput>'}\n{i}. 출력:\n{output}")
    return "\n###\n".join(blocks)
