"""Two real processes (gloo on CPU) train like one process with the same global batch: DDP, FSDP2 and DeepSpeed
ZeRO-2/3 through the shipped recipes/accelerate/ configs, launched the ways README documents."""

import json
import math
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kotune_test_paths import REPO, SAMPLES, summation_tolerance

pytestmark = pytest.mark.slow

SFT_ARGS = ["recipes/sft/quickstart_tiny.yaml", f"data.files=[{SAMPLES / 'koalpaca_v1.0.sample.json'}]",
            "data.max_length=256", "train.max_steps=4", "train.global_batch_size=8", "train.micro_batch_size=2",
            "train.learning_rate=1e-3", "train.warmup_ratio=0.25", "data.eval_fraction=0.02"]
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


def sft_tolerances(row, previous):
    """How far the two runs' SFT metrics may differ at one step (see `summation_tolerance`)."""
    if "eval_loss" in row:  # held-out rows: each process scored a share, gathered; the same examples and tokens
        return {"eval_loss": summation_tolerance(row["eval_loss"], row["eval_tokens"]), "eval_tokens": 0}
    tokens = row["trained_tokens"]  # the loss is the mean cross-entropy over these, every term positive
    # The gradient is a sum of `tokens` per-token gradients of both signs; the magnitudes they add up to are about
    # sqrt(tokens) times the norm of their sum when the per-token gradients are weakly correlated.
    return {"loss": summation_tolerance(row["loss"], tokens), "lr": 0.0,
            "grad_norm": summation_tolerance(math.sqrt(tokens) * row["grad_norm"], tokens)}


def dpo_tolerances(row, previous, *, beta=0.1, max_length=512):
    """How far the two runs' DPO metrics may differ at one step (tiny_dpo.yaml's beta and max_length).

    A margin is beta * ((S_chosen - S_chosen_ref) - (S_rejected - S_rejected_ref)) with S a reply's summed log-probs
    (up to max_length tokens; about -1,000 here, against margins of 0.004): its error is that of the four sums,
    the references about the size of the policy's `logps/*`. The loss -log sigmoid(margin) moves by at most as much
    as the margin. The two runs' margins were 1.5e-6 apart on one machine: the summation order alone.
    """
    sums = 2 * (abs(row["logps/chosen"]) + abs(row["logps/rejected"]))
    margin = beta * summation_tolerance(sums, max_length)
    tokens = row["num_tokens"] - (previous["num_tokens"] if previous else 0)  # num_tokens counts from the start
    return {"loss": margin, "rewards/margins": margin, "lr": 0.0,
            "grad_norm": summation_tolerance(math.sqrt(tokens) * row["grad_norm"], int(tokens))}


def assert_same_training(one, two, tolerances=sft_tolerances):
    rows_one, rows_two = metrics(one), metrics(two)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]  # only rank 0 writes: no duplicated rows
    # Same global batches, loss averaged over the same trained tokens, same schedule: equal up to the order of
    # float sums, which batching and processes change.
    for i, (a, b) in enumerate(zip(rows_one, rows_two)):
        for key, tolerance in tolerances(a, rows_one[i - 1] if i else None).items():
            assert abs(b[key] - a[key]) <= tolerance, (key, a["step"], a[key], b[key], tolerance)
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
    assert_same_training(single, tmp_path)
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
            "train.global_batch_size=8", "train.micro_batch_size=2", "data.eval_fraction=0"]  # training rows only
    run([*KOTUNE, *args, f"output_dir={tmp_path / 'one'}"])
    log = run([*KOTUNE, *args, f"output_dir={tmp_path / 'two'}", "--nproc", "2"])
    assert "--nproc_per_node 2" in log  # the launch kotune printed
    assert "process 0 of 2 (MULTI_CPU)" in log and "process 1 of 2 (MULTI_CPU)" in log  # TRL's accelerator saw both
    assert log.count("training dpo") == 1  # stage messages once per launch, not once per process
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    # Epoch progress shows the global batch: 3 steps x 8 pairs in both (not 8 pairs per process).
    assert two[-1]["epoch"] == pytest.approx(one[-1]["epoch"])
    assert_same_training(tmp_path / "one", tmp_path / "two", dpo_tolerances)


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
               f"reward_model={reward}", f"output_dir={policy}", "train.max_steps=2", "--nproc", "2"])
    assert "process 0 of 2 (MULTI_CPU)" in log and "process 1 of 2 (MULTI_CPU)" in log
    assert [r["step"] for r in metrics(policy)] == [1, 2]
    assert (policy / "ppo_report.json").is_file() and (policy / "model.safetensors").is_file()
