"""`train.report_to`: trackers are checked when the recipe is read, and TensorBoard receives the rows of
metrics.jsonl and the resolved config."""

import json

import pytest
import yaml

from kotune.common.metrics import read_metrics
from kotune.config import ConfigError, load_config
from kotune.sft.config import SFTConfig
from kotune.training import tracking
from kotune_test_paths import SAMPLES, as_float32, tensorboard_scalars


def sft_recipe(tmp_path, *overrides):
    return load_config(SFTConfig, None, [
        "model=m", f"output_dir={tmp_path}", f"data.files=[{SAMPLES / 'koalpaca_v1.0.sample.json'}]", *overrides])


def test_unknown_or_missing_trackers_fail_when_the_recipe_is_read(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="report_to: unknown tracker 'tensorbord'; known: tensorboard, wandb"):
        sft_recipe(tmp_path, "train.report_to=[tensorbord]")
    monkeypatch.setitem(tracking.TRACKERS, "wandb", "kotune_no_such_package")
    with pytest.raises(ConfigError, match="report_to: wandb needs the kotune_no_such_package package"):
        sft_recipe(tmp_path, "train.report_to=[wandb]")
    assert sft_recipe(tmp_path).train.report_to == []  # none by default


def test_flat_config_holds_every_key_as_a_scalar(tmp_path):
    cfg = sft_recipe(tmp_path, "train.report_to=[tensorboard]")
    flat = tracking.flat_config(cfg)
    assert flat["train.learning_rate"] == cfg.train.learning_rate and flat["model"] == "m"
    assert json.loads(flat["data.files"]) == cfg.data.files and flat["lora.target_modules"] == "null"
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())


def test_sft_logs_the_metrics_and_config_to_tensorboard(tiny_neox, tmp_path):
    from kotune.sft.train import run

    records = json.loads((SAMPLES / "koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))[:12]
    (tmp_path / "data.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    cfg = load_config(SFTConfig, None, [
        f"model={tiny_neox}", f"output_dir={tmp_path / 'sft'}", f"data.files=[{tmp_path / 'data.json'}]",
        "data.max_length=128", "train.max_steps=3", "train.global_batch_size=4", "train.micro_batch_size=4",
        "train.report_to=[tensorboard]"])
    out = run(cfg, log=lambda *_: None)
    rows = read_metrics(out / "metrics.jsonl")
    scalars = tensorboard_scalars(out / tracking.TENSORBOARD_DIR)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 3]  # one of the 12 prompts held out
    for key in ("loss", "lr", "grad_norm", "eval_loss"):
        assert scalars[key] == as_float32(rows, key), key
    # The resolved config, as accelerate stores it beside the events (and as TensorBoard hparams).
    (hparams,) = (out / tracking.TENSORBOARD_DIR).glob("*/hparams.yml")
    assert yaml.safe_load(hparams.read_text()) == tracking.flat_config(cfg)
