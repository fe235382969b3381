"""A scripted OpenAI-compatible server on 127.0.0.1 for the judge tests: it answers as the contestants and as the
judge, by rules over the request, and records every request."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from kotune_test_paths import LocalHTTPServer

_ANSWER = re.compile(r"\[어시스턴트 ([AB])의 답변 시작\]\n(.*?)\n\[어시스턴트 \1의 답변 끝\]", re.S)


def shown(prompt: str) -> dict[str, str]:
    """{"A": answer shown first, "B": answer shown second} from a judge prompt."""
    return dict(_ANSWER.findall(prompt))


class ScriptedServer(LocalHTTPServer):
    """`judge(prompt, temperature)` writes the judge model's reply (None: HTTP 500); any other model answers
    `"{model}: {question}"`."""

    def __init__(self, judge: Callable[[str, float], str], judge_model: str = "judge"):
        self.judge, self.judge_model = judge, judge_model
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def judge_requests(self) -> list[dict]:
        return [r for r in self.requests if r["model"] == self.judge_model]

    def _reply(self, body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        if body["model"] == self.judge_model:
            return self.judge(prompt, body.get("temperature") or 0.0)
        return f"{body['model']}: {prompt}"

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub._lock:
                    stub.requests.append(body)
                text = stub._reply(body)
                if text is None:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                payload = json.dumps({
                    "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }, ensure_ascii=False).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
