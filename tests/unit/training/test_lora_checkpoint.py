"""LoRA checkpoints hold the adapter, optimizer, scheduler and RNG, not the frozen base, and still resume exactly.

The model has polyglot-ko-1.3b's architecture (GPT-NeoX, parallel residual, rotary on half of each head, untied
embeddings, 4x MLP, its 30,080-token vocabulary) scaled to hidden 256 and 4 layers, so that a CPU test trains it in
seconds. The ratio the test guards keeps its meaning at full size: the frozen base is everything but the r=8
query_key_value adapters, 99.8% of the weights here (18.5M of 18.6M) and 99.95% for the 12.8B recipe, so a
checkpoint that held the base would be ~190x adapter + optimizer state here (74 MB against 0.39 MB) and ~300x
there (25.6 GB of bf16 base against ~80 MB).
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from kotune_test_paths import SAMPLES
from kotune.config import load_config
from kotune.sft.config import SFTConfig
from kotune.sft.train import run

POLYGLOT_SHAPE_SCALED = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
                         "intermediate_size": 1024, "vocab_size": 30080, "rotary_pct": 0.5,
                         "max_position_embeddings": 2048, "use_parallel_residual": True, "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def polyglot_shaped(tiny_neox, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig

    folder = tmp_path_factory.mktemp("polyglot-shaped")
    tok = AutoTokenizer.from_pretrained(tiny_neox)  # ids < 2,000 of the 30,080 rows: the shape is what matters
    torch.manual_seed(0)
    config = GPTNeoXConfig(**POLYGLOT_SHAPE_SCALED, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def lora_config(model, data, out, *overrides):
    return load_config(SFTConfig, None, [
        f"model={model}", f"output_dir={out}", f"data.files=[{data}]", "data.template=koalpaca", "data.max_length=256",
        "method=lora", "lora.r=8", "train.max_steps=6", "train.save_every=3", "train.global_batch_size=4",
        "train.micro_batch_size=2", "train.learning_rate=1e-3", "train.seed=7", *overrides])


def test_lora_checkpoint_holds_only_trainable_state_and_resumes_exactly(polyglot_shaped, tmp_path):
    records = json.loads((SAMPLES / "koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))[:24]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    whole = run(lora_config(polyglot_shaped, data, tmp_path / "whole"), log=lambda *_: None)

    checkpoint = whole / "checkpoints" / "step-0000003"
    adapter = load_file(whole / "adapter_model.safetensors")
    trainable = sum(t.numel() for t in adapter.values())
    saved = load_file(checkpoint / "model.safetensors")
    assert len(saved) == len(adapter) and all("lora_" in name for name in saved)
    assert sum(t.numel() for t in saved.values()) == trainable
    # fp32 adapter + AdamW's two fp32 moments per trainable parameter; the rest (scheduler, RNG, json) is small.
    checkpoint_bytes = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
    assert checkpoint_bytes <= 2 * 3 * 4 * trainable, (checkpoint_bytes, trainable)

    # A run killed after step 3 leaves exactly this folder (later steps never reach disk before the next
    # checkpoint); resuming from it must redo steps 4-6 as the uninterrupted run did.
    killed = tmp_path / "killed"
    shutil.copytree(checkpoint, killed / "checkpoints" / checkpoint.name)
    log = []
    run(lora_config(polyglot_shaped, data, killed, "train.resume=true"), log=log.append)
    assert any("resumed from" in line and "(step 3)" in line for line in log)
    again = load_file(killed / "adapter_model.safetensors")
    assert again.keys() == adapter.keys()
    # Same process, same CPU, same operations on bit-identical restored state: any difference would be
    # round-off only, while a state left out (moments, scheduler, RNG of LoRA dropout) moves weights by ~lr = 1e-3.
    worst = max((adapter[k] - again[k]).abs().max().item() for k in adapter)
    assert worst <= 1e-6, worst


def test_a_checkpoint_of_another_lora_setting_is_refused(tiny_neox, tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from kotune.models.lora import apply_lora
    from kotune.training.trainable_state import _load_trainable

    def lora(targets):
        base = AutoModelForCausalLM.from_pretrained(tiny_neox)
        return apply_lora(base, r=4, alpha=8, dropout=0.0, target_modules=targets)

    written = lora(["query_key_value"])
    save_file({n: p.detach().contiguous() for n, p in written.named_parameters() if p.requires_grad},
              tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors: does not fit this run's model"):
        _load_trainable([lora(["dense"])], tmp_path)
    models = [lora(["query_key_value"])]
    _load_trainable(models, tmp_path)
    assert models == []  # loaded here, so accelerate's strict loader does not see it
