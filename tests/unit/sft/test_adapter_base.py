"""Adapters record their base as an absolute path with a fingerprint (issue 22): they load from any working
directory and after being moved; a moved or deleted base is named, with the adapter, before any hub request;
`kotune lora merge --base DIR` points an adapter at its base's new place."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from kotune.cli import main
from kotune.config import load_config
from kotune.models.load import BASE_RECORD, load_model
from kotune.sft.config import SFTConfig
from kotune.sft.train import run
from kotune_test_paths import SAMPLES


@pytest.fixture
def adapter_from_relative_base(tiny_llama, tmp_path, monkeypatch):
    """A LoRA adapter trained with `model=base` given relative to the working directory, as users write it."""
    work = tmp_path / "project"
    shutil.copytree(tiny_llama, work / "runs" / "base")
    monkeypatch.chdir(work)
    cfg = load_config(SFTConfig, None, [
        "model=runs/base", "output_dir=runs/lora", f"data.files=[{SAMPLES / 'koalpaca_v1.0.sample.json'}]",
        "data.max_length=64", "method=lora", "lora.r=2", "train.max_steps=1", "train.global_batch_size=4",
        "train.micro_batch_size=4", "train.learning_rate=1e-2"])
    run(cfg, log=lambda *_: None)
    return work


def logits(model):
    with torch.no_grad():
        return model.eval()(torch.tensor([[5, 6, 7, 8]])).logits


def test_adapter_records_an_absolute_base_and_loads_from_anywhere(adapter_from_relative_base, tmp_path, monkeypatch):
    work = adapter_from_relative_base
    config = json.loads((work / "runs" / "lora" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((work / "runs" / "base").resolve())
    record = json.loads((work / "runs" / "lora" / BASE_RECORD).read_text())
    assert record["local"] and len(record["fingerprint"]) == 16
    expected = logits(load_model(str(work / "runs" / "lora")))
    shutil.move(work / "runs" / "lora", tmp_path / "moved-adapter")  # the adapter moves; the base stays
    monkeypatch.chdir(tmp_path)
    assert torch.equal(logits(load_model(str(tmp_path / "moved-adapter"))), expected)


def test_a_changed_base_is_loaded_with_a_warning(adapter_from_relative_base, capsys):
    work = adapter_from_relative_base
    load_model(str(work / "runs" / "lora"))
    assert "warning" not in capsys.readouterr().err
    config = work / "runs" / "base" / "config.json"
    config.write_text(config.read_text().replace('"vocab_size"', '"use_cache": true, "vocab_size"', 1))
    load_model(str(work / "runs" / "lora"))
    assert "differs from the one adapter" in capsys.readouterr().err


def test_a_moved_base_is_named_and_merge_takes_its_new_place(adapter_from_relative_base, tmp_path, monkeypatch, capsys):
    work = adapter_from_relative_base
    adapter = work / "runs" / "lora"
    expected = logits(load_model(str(adapter)))
    shutil.move(work / "runs" / "base", tmp_path / "base-moved")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"base model folder {work / 'runs' / 'base'} \(recorded in "
                                                 rf"{adapter / 'adapter_config.json'}\) does not exist"):
        load_model(str(adapter))
    assert main(["lora", "merge", str(adapter), "--out", str(tmp_path / "merged")]) == 1
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "merged").exists()
    assert main(["lora", "merge", str(adapter), "--base", str(tmp_path / "base-moved"), "--out", str(tmp_path / "merged")]) == 0
    merged = logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged"))
    assert (merged - expected).abs().max().item() <= 1e-5  # float32 merge of a rank-2 update: rounding only


def test_a_wrong_model_path_is_named_as_the_model(tmp_path):
    from kotune.models.load import load_tokenizer

    with pytest.raises(FileNotFoundError, match=r"^model: folder .*missing does not exist"):
        load_tokenizer(str(tmp_path / "missing"))
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"^model: folder .*unfinished holds no tokenizer .*has not finished"):
        load_tokenizer(str(tmp_path / "unfinished"))
    with pytest.raises(FileNotFoundError, match=r"^model: folder .*unfinished holds no model"):
        load_model(str(tmp_path / "unfinished"))
