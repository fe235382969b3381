"""Two real processes (gloo on CPU) train like one process with the same global batch: DDP, FSDP2 and DeepSpeed
ZeRO-2/3 through the shipped recipes/accelerate/ configs, launched the ways README documents."""

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kotune_test_paths import REPO, SAMPLES

pytestmark = pytest.mark.slow

SFT_ARGS = ["recipes/sft/quickstart_tiny.yaml", f"data.files=[{SAMPLES / 'koalpaca_v1.0.sample.json'}]",
            "data.max_length=256", "train.max_steps=4", "train.global_batch_size=8", "train.micro_batch_size=2",
            "train.learning_rate=1e-3", "train.warmup_ratio=0.25"]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
KOTUNE = [sys.executable, "-m", "kotune.cli"]

# name -> (command before the stage arguments, stage options after them, distributed type each rank reports)
LAUNCHES = {
    "ddp": (KOTUNE, ["--nproc", "2"], "MULTI_CPU"),  # kotune's shortcut: torchrun
    "fsdp2": ([*ACCELERATE, "--config_file", "recipes/accelerate/fsdp2.yaml", "--num_processes", "2", "-m",
               "kotune.cli"], [], "FSDP"),
    "zero2": (KOTUNE, ["--nproc", "2", "--accelerate-config", "recipes/accelerate/deepspeed_zero2.yaml"], "DEEPSPEED"),
    "zero3": ([*ACCELERATE, "--config_file", "recipes/accelerate/deepspeed_zero3.yaml", "--num_processes", "2", "-m",
               "kotune.cli"], [], "DEEPSPEED"),
}


def run(cmd):
    # One torch thread per process: two processes share the CI machine's two cores.
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(one, two, *, loss_keys=("loss",)):
    rows_one, rows_two = metrics(one), metrics(two)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]  # only rank 0 writes: no duplicated rows
    # Same global batches, loss averaged over the same trained tokens, same schedule: equal up to float sums.
    for a, b in zip(rows_one, rows_two):
        for key in loss_keys:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (key, a["step"])
    w1, w2 = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert sorted(w1) == sorted(w2)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) <= 1e-5


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_neox):
    """The reference: the same SFT run in one plain process."""
    out = tmp_path_factory.mktemp("single")
    log = run([*KOTUNE, "sft", *SFT_ARGS, f"model={tiny_neox}", f"output_dir={out}"])
    assert "1 process(es)" in log
    return out


@pytest.mark.parametrize("launch", list(LAUNCHES))
def test_two_processes_train_like_one(launch, single, tiny_neox, tmp_path):
    before, after, kind = LAUNCHES[launch]
    log = run([*before, "sft", *SFT_ARGS, f"model={tiny_neox}", f"output_dir={tmp_path}", *after])
    # Both ranks ran and each saw a world of two, sharded the way the config asked (a launch that silently starts
    # one process, or FSDP that silently falls back to DDP, fails here).
    assert f"process 0 of 2 ({kind})" in log and f"process 1 of 2 ({kind})" in log
    assert_same_training(single, tmp_path, loss_keys=("loss", "lr", "grad_norm"))
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["GPTNeoXForCausalLM"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # one process, no launcher
    assert sum(p.numel() for p in reloaded.parameters()) > 0


def test_fsdp_resumes_from_its_sharded_checkpoint(single, tiny_neox, tmp_path):
    """A run stopped after step 2 under FSDP2 resumes from the sharded checkpoint and ends where one process does."""
    before, _, _ = LAUNCHES["fsdp2"]
    cmd = [*before, "sft", *SFT_ARGS, f"model={tiny_neox}", f"output_dir={tmp_path}", "train.save_every=2"]
    run(cmd)
    assert (tmp_path / "checkpoints" / "step-0000002").is_dir()
    (tmp_path / "model.safetensors").unlink()  # as if killed after the checkpoint
    log = run([*cmd, "train.resume=true"])
    assert "(step 2)" in log and "resumed from" in log
    assert_same_training(single, tmp_path)


def test_dpo_with_two_processes_matches_one(single, tmp_path):
    """DPO through TRL: two processes (kotune --nproc 2) take the same global batches as one process."""
    args = ["dpo", "recipes/preference/tiny_dpo.yaml", f"model={single}", "train.max_steps=3",
            "train.global_batch_size=8", "train.micro_batch_size=2"]
    run([*KOTUNE, *args, f"output_dir={tmp_path / 'one'}"])
    log = run([*KOTUNE, *args, f"output_dir={tmp_path / 'two'}", "--nproc", "2"])
    assert "--nproc_per_node 2" in log  # the launch kotune printed
    assert "process 0 of 2 (MULTI_CPU)" in log and "process 1 of 2 (MULTI_CPU)" in log  # TRL's accelerator saw both
    assert log.count("training dpo") == 1  # stage messages once per launch, not once per process
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    # Epoch progress shows the global batch: 3 steps x 8 pairs in both (not 8 pairs per process).
    assert two[-1]["epoch"] == pytest.approx(one[-1]["epoch"])
    assert_same_training(tmp_path / "one", tmp_path / "two", loss_keys=("loss", "grad_norm", "rewards/margins"))


def test_pretraining_from_scratch_under_zero3(tiny_neox, tmp_path):
    """Random init under ZeRO-3 is created sharded (DeepSpeed's zero.Init): held-out perplexity is measured on the
    prepared model before and after training, and falls."""
    before, _, _ = LAUNCHES["zero3"]
    run([*before, "pretrain", "recipes/pretrain/tiny_ko.yaml", f"tokenizer={tiny_neox}", f"output_dir={tmp_path}",
         "train.max_steps=6"])
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["perplexity"] < result["perplexity_before"]
    assert len(metrics(tmp_path)) == 6
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.model_type == "gpt_neox"


def test_reward_then_grpo_with_two_processes(single, tmp_path):
    """The other TRL-backed stages under `--nproc 2`: a reward model (saved, reloaded and checked by the stage), then
    GRPO against it. Both ranks take part in each; only the first writes."""
    reward, policy = tmp_path / "rm", tmp_path / "grpo"
    log = run([*KOTUNE, "reward", "recipes/preference/tiny_rm.yaml", f"model={single}", f"output_dir={reward}",
               "train.max_steps=2", "train.global_batch_size=8", "train.micro_batch_size=2", "--nproc", "2"])
    assert "process 0 of 2 (MULTI_CPU)" in log and "process 1 of 2 (MULTI_CPU)" in log
    assert log.count("reload scores match") == 1
    log = run([*KOTUNE, "ppo", "recipes/preference/tiny_ppo.yaml", "algo=grpo", f"model={single}",
               f"reward_model={reward}", f"output_dir={policy}", "train.steps=2", "--nproc", "2"])
    assert "process 0 of 2 (MULTI_CPU)" in log and "process 1 of 2 (MULTI_CPU)" in log
    assert [r["step"] for r in metrics(policy)] == [1, 2]
    assert (policy / "ppo_report.json").is_file() and (policy / "model.safetensors").is_file()
