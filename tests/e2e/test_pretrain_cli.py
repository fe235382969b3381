"""Tokenizer training and pre-training through the real CLI: loss falls, held-out perplexity drops below the
random-init model's, and a killed run resumes to the same weights."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from kotune_test_paths import REPO, SAMPLES
from kotune.common.metrics import read_metrics

pytestmark = pytest.mark.slow


def kotune(*args):
    result = subprocess.run([sys.executable, "-m", "kotune.cli", *map(str, args)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "ko"
    result = kotune("tokenizer", "train", SAMPLES / "chatbotdata_ko.txt", "--vocab-size", "2000", "--out", out)
    assert "Korean chars/token" in result.stdout
    return out


def pretrain_args(tokenizer_dir, out):
    return ["pretrain", "recipes/pretrain/tiny_ko.yaml", f"tokenizer={tokenizer_dir}", f"output_dir={out}",
            f"data.files=[{SAMPLES / 'chatbotdata_ko.txt'}]", "data.block_size=64", "data.eval_max_blocks=20",
            "init.hidden_size=64", "train.max_steps=40", "train.global_batch_size=8", "train.micro_batch_size=8",
            "train.learning_rate=5e-3", "train.save_every=4", "train.seed=5"]


def test_pretraining_learns(tokenizer_dir, tmp_path):
    out = tmp_path / "pt"
    result = kotune(*pretrain_args(tokenizer_dir, out))
    assert "held-out perplexity" in result.stdout
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    report = json.loads((out / "eval.json").read_text())
    assert report["perplexity"] < 0.5 * report["perplexity_before"]
    for name in ("model.safetensors", "tokenizer_config.json", "loss.png", "config.yaml", "tokens/train.bin"):
        assert (out / name).is_file(), name


def test_resume_after_kill_matches_uninterrupted(tokenizer_dir, tmp_path):
    kotune(*pretrain_args(tokenizer_dir, tmp_path / "whole"))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "kotune.cli", *pretrain_args(tokenizer_dir, killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step-0000008" / "state.json").exists() and time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()
    kotune(*pretrain_args(tokenizer_dir, killed), "train.resume=true")
    whole, again = load_file(tmp_path / "whole" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert max((whole[k] - again[k]).abs().max().item() for k in whole) <= 1e-4
