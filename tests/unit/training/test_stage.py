"""The one stage start and finish: the main process alone writes the run folder; the others neither write nor
print, and see the same seed, precision and tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from kotune.common.outputs import CONFIG_YAML, METRICS_JSONL, STAGE_CURVES, STAGE_REPORTS
from kotune.config import load_config
from kotune.preference.config import DPOConfig
from kotune.training.stage import finish_stage, start_stage



def dpo_config(model, out):
    return load_config(DPOConfig, None, [f"model={model}", f"output_dir={out}", "data.files=[p.jsonl]",
                                         "train.precision=fp32", "train.seed=7"])


@pytest.mark.parametrize("rank", ["0", "1"])
def test_only_the_main_process_writes_and_prints(tiny_neox, tmp_path, monkeypatch, rank):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("RANK", rank)
    said = []
    ctx = start_stage(dpo_config(tiny_neox, tmp_path / "out"), "dpo", said.append)
    assert (ctx.is_main, ctx.precision, ctx.device.type) == (rank == "0", "fp32", "cpu")
    assert torch.initial_seed() == 7 and ctx.tokenizer.chat_template
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / METRICS_JSONL).write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    model = AutoModelForCausalLM.from_pretrained(tiny_neox)
    finish_stage(ctx, model, curves=["loss"], title="t", report={"a": 1}, after_save=lambda: {"b": 2})
    written = {p.name for p in (tmp_path / "out").iterdir()}
    if rank == "0":
        assert {CONFIG_YAML, STAGE_CURVES["dpo"], "model.safetensors", "tokenizer.json"} <= written
        assert json.loads((tmp_path / "out" / STAGE_REPORTS["dpo"]).read_text()) == {"a": 1, "b": 2}
        assert said == [f"template: {ctx.template}"]
    else:
        assert written == {METRICS_JSONL} and said == []
