"""Shared fixtures: tiny models and tokenizers built locally once per test session; no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kotune_test_paths import REPO, SAMPLES  # noqa: F401,E402  (re-exported for fixtures)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{"gpt-neox": folder, "llama": folder}: tiny random models with a Korean BPE tokenizer."""
    from kotune.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(root / arch, arch=arch, vocab_size=2000) for arch in ("gpt-neox", "llama")}


@pytest.fixture(scope="session")
def tiny_neox(tiny_models) -> Path:
    return tiny_models["gpt-neox"]


@pytest.fixture(scope="session")
def tiny_llama(tiny_models) -> Path:
    return tiny_models["llama"]
