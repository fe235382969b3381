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


def conversational_pairs():
    """One multi-turn pair (system, an earlier exchange, the question) in each of the three chat layouts."""
    system, history, question = "친절하게 답하세요.", [("user", "안녕?"), ("assistant", "안녕하세요!")], "오늘 날씨 어때?"
    chosen, rejected = "맑고 따뜻해요.", "몰라."
    msgs = [{"role": "system", "content": system}, *({"role": r, "content": c} for r, c in history),
            {"role": "user", "content": question}]
    sharegpt = [{"from": {"user": "human", "assistant": "gpt"}[r], "value": c} for r, c in history]
    return [
        {"prompt": msgs, "chosen": [{"role": "assistant", "content": chosen}],
         "rejected": [{"role": "assistant", "content": rejected}]},  # TRL conversational
        {"chosen": [*msgs, {"role": "assistant", "content": chosen}],
         "rejected": [*msgs, {"role": "assistant", "content": rejected}]},  # TRL implicit prompt
        {"system": system, "conversations": [*sharegpt, {"from": "human", "value": question}],
         "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected}},  # LLaMA-Factory
    ]
