"""DPO from a tiny SFT model: the loss falls and the chosen-rejected margin grows; with LoRA the reference is the SFT
model; KTO, ORPO and SimPO run through TRL on the same token ids."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from kotune.common.metrics import read_metrics
from kotune.config import load_config
from kotune.preference.config import DPOConfig
from kotune.preference.dpo import run
from kotune_test_paths import (FP32_UNIT_ROUNDOFF, as_float32, summation_tolerance, tensorboard_scalars,
                               tensorboard_texts)


def dpo_config(model, data, out, *overrides):
    return load_config(DPOConfig, None, [
        f"model={model}", f"output_dir={out}", f"data.files=[{data}]", "data.skip_invalid=true", "data.max_length=96",
        "data.eval_fraction=0", "train.global_batch_size=8", "train.micro_batch_size=8", "train.warmup_ratio=0",
        "train.lr_scheduler=constant", *overrides,
    ])


def test_dpo_loss_falls_and_margin_grows(sft_neox, toy_pairs, tmp_path):
    out = run(dpo_config(sft_neox, toy_pairs, tmp_path / "dpo", "train.max_steps=8", "train.learning_rate=1e-3",
                         "data.eval_fraction=0.25"), log=lambda *_: None)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]  # training rows; eval rows hold eval_*
    assert len(rows) == 8
    # policy == reference at the first step: margins 0 and the loss log 2, up to the rounding of the four summed
    # reply log-probs in each margin (beta 0.1, replies up to max_length 96 tokens)
    first = rows[0]
    margin_tolerance = 0.1 * summation_tolerance(2 * (abs(first["logps/chosen"]) + abs(first["logps/rejected"])), 96)
    assert abs(first["rewards/margins"]) <= margin_tolerance
    assert abs(first["loss"] - math.log(2)) <= margin_tolerance + FP32_UNIT_ROUNDOFF  # -log sigmoid moves less than the margin
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"] + 0.5
    report = json.loads((out / "dpo_report.json").read_text())
    assert report["data"]["skipped_records_per_kind"] == {"empty": 1, "identical_pair": 1}
    assert report["trl_heldout"]["eval_rewards/margins"] > 0  # prompts it never trained on
    # kotune's own held-out figures: before is the SFT model, the frozen reference itself
    heldout = report["heldout"]
    assert heldout["examples"] == report["data"]["eval_pairs"] > 0 and "reference" in heldout["before_is"]
    assert set(heldout["figures"]) == {"accuracy", "margin", "chosen_logprob"}
    assert heldout["figures"]["margin"]["difference"]["value"] > 0
    assert (out / "curves.png").is_file()
    AutoModelForCausalLM.from_pretrained(out)  # a plain transformers model


def test_dpo_lora_reference_is_the_sft_model(sft_neox, toy_pairs, tmp_path):
    from peft import PeftModel

    out = run(dpo_config(sft_neox, toy_pairs, tmp_path / "dpo_lora", "method=lora", "lora.r=4", "train.max_steps=3",
                         "train.learning_rate=5e-3"), log=lambda *_: None)
    rows = read_metrics(out / "metrics.jsonl")
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]
    sft = AutoModelForCausalLM.from_pretrained(sft_neox)
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_neox), out)
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        with policy.disable_adapter():
            reference = policy(ids).logits
        trained = policy(ids).logits
        expected = sft(ids).logits
    assert torch.allclose(reference, expected, atol=1e-5)  # the frozen reference DPO compared against
    assert not torch.allclose(trained, expected, atol=1e-4)  # and the adapter learned something


@pytest.mark.parametrize("algo", ["kto", "orpo", "simpo"])
def test_other_trl_preference_losses_train(sft_neox, toy_pairs, tmp_path, algo):
    out = run(dpo_config(sft_neox, toy_pairs, tmp_path / algo, f"algo={algo}", "train.max_steps=2",
                         "train.learning_rate=1e-3", "data.eval_fraction=0.25"), log=lambda *_: None)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    report = json.loads((out / "dpo_report.json").read_text())
    assert torch.isfinite(torch.tensor(report["trl_heldout"]["eval_loss"]))
    # the same figures for every loss type, measured by kotune
    figures = report["heldout"]["figures"]
    assert set(figures) == {"accuracy", "margin", "chosen_logprob"}
    assert all(math.isfinite(f[when]["value"]) for f in figures.values() for when in ("before", "after", "difference"))
    sft = AutoModelForCausalLM.from_pretrained(sft_neox)
    trained = AutoModelForCausalLM.from_pretrained(out)
    assert any(not torch.equal(a, b) for a, b in zip(sft.parameters(), trained.parameters()))


def test_sft_weight_adds_the_chosen_replies_nll(sft_neox, toy_pairs, tmp_path):
    """RPO: with sft_weight the logged loss is DPO's (log 2 at the first step, policy == reference) plus the
    weighted NLL of the chosen replies, which a tiny model puts well above 1."""
    out = run(dpo_config(sft_neox, toy_pairs, tmp_path / "rpo", "train.max_steps=1", "sft_weight=0.5"),
              log=lambda *_: None)
    first = read_metrics(out / "metrics.jsonl")[0]
    assert first["loss"] > 0.6931 + 0.5 * 1.0
    with pytest.raises(ValueError, match="sft_weight: a non-negative weight, for algo dpo only"):
        load_config(DPOConfig, None, ["model=m", "output_dir=o", "data.files=[x]", "algo=orpo", "sft_weight=1"])


def test_dpo_reports_to_tensorboard_through_trl(sft_neox, toy_pairs, tmp_path):
    out = run(dpo_config(sft_neox, toy_pairs, tmp_path / "tb", "train.max_steps=2", "train.report_to=[tensorboard]"),
              log=lambda *_: None)
    rows = read_metrics(out / "metrics.jsonl")
    scalars = tensorboard_scalars(out / "tensorboard")  # TRL's TensorBoard callback, in the stage's folder
    assert scalars["train/loss"] == as_float32(rows, "loss")
    assert scalars["train/rewards/margins"] == as_float32(rows, "rewards/margins")
    config = tensorboard_texts(out / "tensorboard")["kotune_config/text_summary"]
    assert "report_to:\n  - tensorboard" in config and f"model: {sft_neox}" in config  # the resolved config
    assert not (out / "trainer").exists()  # nothing of TRL's scratch folder is left


def test_loss_variants_only_for_dpo():
    with pytest.raises(ValueError, match="loss_type: only algo dpo"):
        load_config(DPOConfig, None, ["model=m", "output_dir=o", "data.files=[x]", "algo=orpo", "loss_type=ipo"])
    with pytest.raises(ValueError, match="loss_type: unknown 'sigmoidd'"):
        load_config(DPOConfig, None, ["model=m", "output_dir=o", "data.files=[x]", "loss_type=sigmoidd"])


@pytest.mark.parametrize("algo", ["dpo", "kto", "orpo", "simpo"])
def test_multi_turn_conversational_pairs_train_with_every_algo(sft_neox, tmp_path, algo):
    """Pairs with a system message and earlier turns (TRL's conversational and ShareGPT layouts) train in context."""
    from kotune_test_paths import conversational_pairs

    trl, _, sharegpt = conversational_pairs()
    files = []
    for name, record in (("trl.jsonl", trl), ("sharegpt.jsonl", sharegpt)):
        (tmp_path / name).write_text((json.dumps(record, ensure_ascii=False) + "\n") * 4, encoding="utf-8")
        files.append(str(tmp_path / name))
    out = run(dpo_config(sft_neox, files[0], tmp_path / algo, f"algo={algo}", "train.max_steps=1", "data.max_length=128",
                         f"data.files=[{','.join(files)}]"), log=lambda *_: None)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert len(rows) == 1 and torch.isfinite(torch.tensor(rows[0]["loss"]))
    report = json.loads((out / "dpo_report.json").read_text())["data"]
    assert report["records_per_format"] == {"preference": 4, "sharegpt_preference": 4} and report["train_pairs"] == 8
