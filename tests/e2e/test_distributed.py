"""Two real processes (torchrun, gloo on CPU) train like one process with the same global batch."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kotune_test_paths import REPO, SAMPLES

pytestmark = pytest.mark.slow


def torchrun(nproc, out, model):
    args = [f"model={model}", f"output_dir={out}", f"data.files=[{SAMPLES / 'koalpaca_v1.0.sample.json'}]",
            "data.max_length=256", "train.max_steps=4", "train.global_batch_size=8", "train.micro_batch_size=2",
            "train.learning_rate=1e-3", "train.warmup_ratio=0.25"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "-m", "kotune.cli", "sft",
           "recipes/sft/quickstart_tiny.yaml", *args]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_ddp_two_processes_match_one(tiny_neox, tmp_path):
    single = torchrun(1, tmp_path / "one", tiny_neox)
    double = torchrun(2, tmp_path / "two", tiny_neox)
    assert "1 process(es)" in single
    # Both ranks ran and each saw a world of two (a launch that silently starts one process fails here).
    assert "process 0 of 2 (MULTI_CPU)" in double and "process 1 of 2 (MULTI_CPU)" in double
    one = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in two] == [1, 2, 3, 4]  # only rank 0 writes: no duplicated rows
    # Same global batches, loss averaged over the same trained tokens, same schedule: equal up to float sums.
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) <= 1e-5
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "two")
    assert torch.isfinite(reloaded(torch.tensor([[1, 2, 3]])).logits).all()
