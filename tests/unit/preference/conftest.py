"""Fixtures of the chat-tuning tests: tiny "SFT models", a separable Korean toy preference set, and a reward model
trained on it once (the PPO tests reuse it as their trained reward).

This directory is a package (`__init__.py`), so its test modules import helpers from here as `.conftest`."""

from __future__ import annotations

import json
import shutil

import pytest
from kotune_test_paths import SAMPLES, single_torch_thread

from kotune.config import load_config

POLITE = ["네, 알려드릴게요. 감사합니다.", "좋은 질문이에요. 도움이 되었으면 좋겠습니다.", "기꺼이 도와드릴게요. 감사합니다."]
RUDE = ["몰라.", "싫어. 귀찮아.", "그런 건 묻지 마."]


def make_sft(src, out):
    """A tiny "SFT model": the tiny random model with the ko_chat template saved in its tokenizer, as `kotune sft`
    leaves it."""
    from transformers import AutoTokenizer

    from kotune.data.templates import install_template

    shutil.copytree(src, out)
    tok = AutoTokenizer.from_pretrained(out)
    install_template(tok, "ko_chat")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """One torch thread for this package's tests (see `kotune_test_paths.single_torch_thread`)."""
    with single_torch_thread():
        yield


@pytest.fixture(scope="package")
def sft_neox(one_torch_thread, tiny_neox, tmp_path_factory):
    return make_sft(tiny_neox, tmp_path_factory.mktemp("sft") / "neox")


def toy_records(n: int = 48) -> list[dict]:
    """Separable pairs: a polite reply is preferred to a curt one, whatever the question."""
    prompts = [r["prompt"] for r in json.loads((SAMPLES / "kochatgpt_ppo_prompts.sample.json").read_text(encoding="utf-8"))]
    return [{"prompt": prompts[i], "chosen": POLITE[i % 3], "rejected": RUDE[(i // 3) % 3]} for i in range(n)]


@pytest.fixture(scope="package")
def toy_sft(one_torch_thread, tiny_neox, tmp_path_factory):
    """The chatKoAlpaca chain in small: the tiny model after `kotune sft` on the toy prompts answered half politely,
    half curtly. Its samples are therefore sometimes polite, which gives PPO something to find."""
    from kotune.sft.config import SFTConfig
    from kotune.sft.train import run

    root = tmp_path_factory.mktemp("toy_sft")
    prompts = [r["prompt"] for r in toy_records()]
    data = [{"prompt": p, "completion": (POLITE if i % 2 else RUDE)[(i // 2) % 3]} for i, p in enumerate(prompts)]
    (root / "sft.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    cfg = load_config(SFTConfig, None, [
        f"model={tiny_neox}", f"output_dir={root / 'model'}", f"data.files=[{root / 'sft.json'}]", "data.template=ko_chat",
        "data.max_length=96", "train.max_steps=30", "train.learning_rate=3e-3", "train.global_batch_size=8",
        "train.micro_batch_size=8", "train.warmup_ratio=0", "train.lr_scheduler=constant",
    ])
    return run(cfg, log=lambda *_: None)


@pytest.fixture(scope="package")
def toy_pairs(tmp_path_factory) -> str:
    """The toy set plus the two problems real data has: an empty (zero-width) side and chosen == rejected."""
    records = toy_records()
    records.insert(5, {"prompt": "빈 답", "chosen": "답입니다.<|endoftext|>", "rejected": "\u200b<|endoftext|>"})
    records.insert(9, {"prompt": "같은 답", "chosen": "같아요.", "rejected": "같아요. "})
    path = tmp_path_factory.mktemp("pairs") / "toy_pairs.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="package")
def toy_prompts(tmp_path_factory) -> str:
    records = [{"prompt": r["prompt"]} for r in toy_records(32)]
    path = tmp_path_factory.mktemp("prompts") / "toy_prompts.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return str(path)


def reward_config(model, data, out, *overrides):
    from kotune.preference.config import RewardConfig

    return load_config(RewardConfig, None, [
        f"model={model}", f"output_dir={out}", f"data.files=[{data}]", "data.skip_invalid=true", "data.max_length=96",
        "data.eval_fraction=0.25", "train.global_batch_size=8", "train.micro_batch_size=8", "train.max_steps=12",
        "train.learning_rate=2e-3", "train.warmup_ratio=0", "train.lr_scheduler=constant", *overrides,
    ])


@pytest.fixture(scope="package")
def toy_rm(one_torch_thread, toy_sft, toy_pairs, tmp_path_factory):
    """A reward model trained from the toy SFT model on the toy set (the output folder of `kotune reward`)."""
    from kotune.preference.reward import run

    return run(reward_config(toy_sft, toy_pairs, tmp_path_factory.mktemp("rm") / "rm"), log=lambda *_: None)
