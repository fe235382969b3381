"""`kotune lora merge` saves the merged model in the dtype its base is stored in (found by the realsize test: an
fp16 polyglot-ko-1.3b base came out as fp32, twice the bytes), merging in fp32 first."""

import shutil

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from kotune.config import load_config
from kotune.models.lora import merge_adapter
from kotune.sft.config import SFTConfig
from kotune.sft.train import run
from kotune_test_paths import SAMPLES


def stored_dtypes(folder):
    with safe_open(folder / "model.safetensors", "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}


def test_an_fp16_base_merges_to_fp16_equal_to_the_fp32_merge_rounded(tiny_llama, tmp_path):
    base = tmp_path / "base16"
    shutil.copytree(tiny_llama, base)
    AutoModelForCausalLM.from_pretrained(tiny_llama).half().save_pretrained(base)
    cfg = load_config(SFTConfig, None, [
        f"model={base}", f"output_dir={tmp_path / 'lora'}", f"data.files=[{SAMPLES / 'koalpaca_v1.0.sample.json'}]",
        "data.max_length=64", "method=lora", "lora.r=2", "train.max_steps=1", "train.global_batch_size=4",
        "train.micro_batch_size=4", "train.learning_rate=1e-2"])
    run(cfg, log=lambda *_: None)
    merged = merge_adapter(str(tmp_path / "lora"), str(tmp_path / "merged"))
    assert stored_dtypes(merged) == {"F16"}
    # the fp32 merge, rounded once to fp16, is what was saved
    from kotune.models.load import load_model

    reference = load_model(str(tmp_path / "lora")).merge_and_unload().state_dict()
    saved = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).state_dict()
    changed = [k for k in reference if "q_proj" in k]
    assert changed
    for name in reference:
        assert torch.equal(saved[name], reference[name].half().float()), name
