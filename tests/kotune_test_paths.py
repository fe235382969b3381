"""Paths and small helpers the tests share. A module of its own (not `conftest`): several conftest.py files
exist, and `from conftest import ...` would pick whichever was imported first."""

import shutil
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"


def make_chat_model(model_dir: Path, out: Path) -> Path:
    """A copy of a tiny model whose tokenizer carries the ko_chat template, like every `kotune sft` output."""
    from transformers import AutoTokenizer

    from kotune.data.templates import install_template

    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    install_template(tok, "ko_chat")
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
