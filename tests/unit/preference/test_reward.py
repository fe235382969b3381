"""The reward stage: held-out accuracy rises above chance, backbone and head save together and reload to the same
scores, skipped pairs are counted, and a LoRA reward model is saved as one plain model."""

import json

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kotune.common.metrics import read_metrics
from kotune.preference.reward import run
from kotune.preference.scoring import PROBE_FILE, score_sequences

from .conftest import reward_config


def test_reward_model_learns_a_separable_set_and_reports_it(toy_rm):
    report = json.loads((toy_rm / "reward_report.json").read_text())
    heldout = report["heldout"]
    accuracy, margin = heldout["figures"]["accuracy"], heldout["figures"]["margin"]
    assert heldout["examples"] >= 10 and accuracy["after"]["n"] == heldout["examples"]
    assert accuracy["after"]["value"] >= 0.9 and accuracy["after"]["value"] > accuracy["before"]["value"]  # chance: 0.5
    assert margin["after"]["value"] > 0
    assert heldout["changed"] and accuracy["difference"]["low"] > 0  # measurably better, not only by its point value
    assert accuracy["after"]["low"] <= accuracy["after"]["value"] <= accuracy["after"]["high"]
    # The two broken records of the toy file are counted by kind, not silently dropped.
    assert report["data"]["skipped_records_per_kind"] == {"empty": 1, "identical_pair": 1}
    losses = [r["loss"] for r in read_metrics(toy_rm / "metrics.jsonl")]
    assert len(losses) == 12 and losses[-1] < losses[0]
    for name in ("curves.png", "config.yaml", "model.safetensors", PROBE_FILE):
        assert (toy_rm / name).is_file(), name


def test_saved_reward_model_reloads_alone_with_the_same_scores(toy_rm):
    probe = json.loads((toy_rm / PROBE_FILE).read_text())
    model = AutoModelForSequenceClassification.from_pretrained(toy_rm)  # plain transformers, no kotune loader
    tok = AutoTokenizer.from_pretrained(toy_rm)
    assert model.config.num_labels == 1 and tok.chat_template  # the SFT template travels with the reward model
    got = score_sequences(model, probe["input_ids"], model.config.pad_token_id)
    assert torch.allclose(got, torch.tensor(probe["scores"]), atol=1e-5)
    assert len(set(round(s, 4) for s in probe["scores"])) > 1  # a real probe: the scores differ


def test_lora_reward_model_is_merged_into_one_loadable_model(sft_neox, toy_pairs, tmp_path):
    out = run(reward_config(sft_neox, toy_pairs, tmp_path / "rm", "method=lora", "lora.r=4", "train.max_steps=3"),
              log=lambda *_: None)
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out)
    torch.manual_seed(42)  # train.seed: the reward stage initialised its new head from this state
    sft = AutoModelForSequenceClassification.from_pretrained(sft_neox, num_labels=1)
    # The LoRA update was merged into the backbone, and the trained head (not the initial one) saved with it.
    name = next(n for n, _ in model.named_parameters() if "query_key_value.weight" in n)
    assert not torch.equal(model.get_parameter(name), sft.get_parameter(name))
    assert not torch.allclose(model.score.weight, sft.score.weight)
    probe = json.loads((out / PROBE_FILE).read_text())
    assert torch.allclose(score_sequences(model, probe["input_ids"], model.config.pad_token_id),
                          torch.tensor(probe["scores"]), atol=1e-5)
