"""`kotune chat MODEL` as a real process: a scripted Korean conversation through stdin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from serve_helpers import make_chat_model

pytestmark = pytest.mark.slow


def test_chat_cli_conversation(tiny_llama, tmp_path):
    model = make_chat_model(tiny_llama, tmp_path / "tiny-chat")
    script = "안녕하세요\n/system 존댓말로 답하세요\n두 번째 질문이에요\n/reset\n/exit\n"
    result = subprocess.run(
        [sys.executable, "-m", "kotune.cli", "chat", str(model), "--max-new-tokens", "6", "--temperature", "0",
         "--threads", "1"],
        input=script, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "/reset" in out.splitlines()[0]  # the banner names the commands
    assert out.count("어시스턴트> ") == 2
    assert "(system message: 존댓말로 답하세요)" in out and "(new conversation)" in out
    assert "note:" not in out  # the model carries its own chat template: no fallback
