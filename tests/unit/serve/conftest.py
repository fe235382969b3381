"""Serving fixtures: a tiny chat model (ko_chat template saved in its tokenizer, like a kotune SFT output) and
one engine over it, shared by the serve unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kotune_test_paths import make_chat_model


@pytest.fixture(scope="session")
def chat_model(tiny_llama, tmp_path_factory) -> Path:
    return make_chat_model(tiny_llama, tmp_path_factory.mktemp("chat-llama"))


@pytest.fixture(scope="session")
def chat_model_neox(tiny_neox, tmp_path_factory) -> Path:
    return make_chat_model(tiny_neox, tmp_path_factory.mktemp("chat-neox"))


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
