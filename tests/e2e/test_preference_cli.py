"""The chat-tuning stages through the real CLI on the tiny recipes: reward model -> PPO, and DPO, from a tiny SFT
model; and a "reward model" without a trained head is refused with a message, not a traceback."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from kotune_test_paths import REPO, kl_at_reference_tolerance

pytestmark = pytest.mark.slow


def kotune(*args, check=True):
    # One torch thread: tiny models gain nothing from more, and a spinning second thread is slow on shared CPUs.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "kotune.cli", *map(str, args)], cwd=REPO, capture_output=True,
                            text=True, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def sft(tiny_neox, tmp_path_factory):
    """Stands in for runs/quickstart-sft: the tiny model with the quickstart's KoAlpaca template saved."""
    from transformers import AutoTokenizer

    from kotune.data.templates import install_template

    out = tmp_path_factory.mktemp("sft") / "model"
    shutil.copytree(tiny_neox, out)
    tok = AutoTokenizer.from_pretrained(out)
    install_template(tok, "koalpaca")
    tok.save_pretrained(out)
    return out


def test_tiny_recipes_reward_then_ppo_through_the_cli(sft, tmp_path):
    rm = tmp_path / "rm"
    result = kotune("reward", "recipes/preference/tiny_rm.yaml", f"model={sft}", f"output_dir={rm}",
                    "train.max_steps=2", "train.global_batch_size=8", "data.max_pairs=64")
    assert "held-out (" in result.stdout and "skipped pairs: empty" in result.stdout
    report = json.loads((rm / "reward_report.json").read_text())
    assert report["heldout"]["examples"] == report["data"]["eval_pairs"] > 0
    assert report["data"]["skipped_records_per_kind"]["empty"] >= 1  # the shipped VAIV sample has empty sides
    assert report["reload_max_score_diff"] == 0
    for name in ("model.safetensors", "reward_probe.json", "metrics.jsonl", "curves.png", "config.yaml"):
        assert (rm / name).is_file(), name

    ppo = tmp_path / "ppo"
    result = kotune("ppo", "recipes/preference/tiny_ppo.yaml", f"model={sft}", f"reward_model={rm}",
                    f"output_dir={ppo}", "train.max_steps=2", "generation.max_new_tokens=8", "data.max_prompts=16")
    assert "reward model checked" in result.stdout
    assert "prompts: 14 train, 2 held out" in result.stdout and "held-out (2 examples): reward " in result.stdout
    rows = [json.loads(line) for line in (ppo / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and abs(rows[0]["kl"]) <= kl_at_reference_tolerance(rows[0], 8)  # actor == reference
    assert rows[0]["policy_grad_norm"] > 0
    for name in ("model.safetensors", "critic/model.safetensors", "curves.png", "ppo_report.json"):
        assert (ppo / name).is_file(), name
    heldout = json.loads((ppo / "ppo_report.json").read_text())["heldout"]
    assert set(heldout["figures"]) == {"reward", "kl"} and heldout["figures"]["reward"]["after"]["n"] == 2

    # The seed's mistake through the CLI: the SFT model (no trained head) as reward model.
    bad = kotune("ppo", "recipes/preference/tiny_ppo.yaml", f"model={sft}", f"reward_model={sft}",
                 f"output_dir={tmp_path / 'bad'}", check=False)
    assert bad.returncode == 1
    assert "kotune: error: reward_model" in bad.stderr and "no trained reward head" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_tiny_dpo_recipe_through_the_cli(sft, tmp_path):
    out = tmp_path / "dpo"
    result = kotune("dpo", "recipes/preference/tiny_dpo.yaml", f"model={sft}", f"output_dir={out}",
                    "train.max_steps=2", "train.global_batch_size=8", "data.max_pairs=32")
    assert "chosen-rejected margin" in result.stdout and "held-out (" in result.stdout
    report = json.loads((out / "dpo_report.json").read_text())
    assert report["data"]["skipped_records_per_kind"]["empty"] >= 1
    heldout = report["heldout"]  # the recipe holds pairs out by default, and kotune measures them itself
    assert heldout["examples"] == report["data"]["eval_pairs"] > 0
    assert set(heldout["figures"]) == {"accuracy", "margin", "chosen_logprob"}
    for name in ("model.safetensors", "tokenizer_config.json", "metrics.jsonl", "curves.png"):
        assert (out / name).is_file(), name
    help_text = kotune("dpo", "--help").stdout
    assert "algo (dpo | kto | orpo | simpo" in help_text and "loss_type" in help_text
