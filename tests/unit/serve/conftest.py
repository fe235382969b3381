"""Serving fixtures: a tiny chat model (ko_chat template saved in its tokenizer, like a kotune SFT output) and
one engine over it, shared by the serve unit tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def save_chat_copy(model_dir: Path, out: Path) -> Path:
    from transformers import AutoTokenizer

    from kotune.data.templates import install_template

    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    install_template(tok, "ko_chat")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def chat_model(tiny_llama, tmp_path_factory) -> Path:
    return save_chat_copy(tiny_llama, tmp_path_factory.mktemp("chat-llama"))


@pytest.fixture(scope="session")
def chat_model_neox(tiny_neox, tmp_path_factory) -> Path:
    return save_chat_copy(tiny_neox, tmp_path_factory.mktemp("chat-neox"))


@pytest.fixture(scope="session")
def engine(chat_model):
    from kotune.models.generate import Engine

    eng = Engine.load(str(chat_model), max_batch_size=8, max_waiting=16, threads=1, device="cpu")
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def reference_model(chat_model):
    """A second copy of the weights for plain `model.generate`, so the engine's own model is never shared."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(chat_model).eval()
