"""The planner's CPU figures against memory measured on CPU for shape-true GPT-NeoX and LLaMA models.

Measured: peak RSS of a fresh process over two real optimizer steps of kotune's loop pieces (AdamW as the loop
builds it, the loop's loss with logits only at trained tokens), above its own peak just before the model is built
(see measure_step.py). Planned: `estimate(..., device="cpu")` at fp32 (CPU: no autocast), engine single.

Why 15%: the plan counts tensors (weights, gradients, AdamW moments, saved activations, the loss's fp32
gradients, the optimizer's per-tensor temporaries); RSS also holds what no tensor count sees: allocator
bookkeeping and page rounding of each tensor, thread-local buffers of the kernels and autograd's graph nodes.
Those grow with the number of tensors, not their size; measured / planned was 0.95-1.07 at these sizes on this
machine (full fine-tuning a little under 1: the plan holds the loss's transients and the first layer's activations
at their largest together; LoRA a little over 1, its many small adapter tensors being where the uncounted overhead
is largest). 15% is the issue's bar for a plan a user may trust, and leaves room for other CPUs' kernels choosing
other workspaces. Sizes (7M-42M parameters, 256-512 tokens per sequence; full with and without gradient
checkpointing, LoRA) keep weights and activations both large against that noise, with activations 20-40% of the
total so that their accounting is tested too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kotune.plan.memory import Job, estimate, trainable
from kotune.plan.shapes import shape_of

SCRIPT = Path(__file__).with_name("measure_step.py")
CASES = [
    pytest.param({"model_type": "gpt_neox", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
                  "intermediate_size": 2048, "vocab_size": 16000, "rotary_pct": 0.5}, 2, 256, id="neox-42M"),
    pytest.param({"model_type": "gpt_neox", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
                  "intermediate_size": 2048, "vocab_size": 16000, "rotary_pct": 0.5}, 2, 512, True,
                 id="neox-42M-checkpointing"),
    pytest.param({"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
                  "num_key_value_heads": 4, "intermediate_size": 704, "vocab_size": 8000}, 4, 256, id="llama-7M-gqa"),
    pytest.param({"model_type": "llama", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
                  "num_key_value_heads": 8, "intermediate_size": 1408, "vocab_size": 16000}, 2, 512, True,
                 id="llama-42M-checkpointing"),
    pytest.param({"model_type": "gpt_neox", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
                  "intermediate_size": 2048, "vocab_size": 16000, "rotary_pct": 0.5}, 2, 512, False, "lora",
                 id="neox-42M-lora"),
    pytest.param({"model_type": "llama", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
                  "num_key_value_heads": 8, "intermediate_size": 1408, "vocab_size": 16000}, 2, 512, False, "lora",
                 id="llama-42M-lora"),
]


def _full_row(values):  # spec, batch, length[, checkpointing[, method]]
    return (*values, *(False, "full")[len(values) - 3:])


@pytest.mark.parametrize("spec,batch,length,checkpointing,method", [
    pytest.param(*_full_row(case.values), id=case.id) for case in CASES])
def test_planned_peak_matches_measured_cpu_step(spec, batch, length, checkpointing, method):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = {**spec, "max_position_embeddings": 1024}
    with torch.device("meta"):
        shape = shape_of(AutoModelForCausalLM.from_config(AutoConfig.for_model(**spec)), "shape-true")
    planned = estimate(Job(shape, method=method, micro_batch=batch, length=length, precision="fp32", checkpointing=checkpointing, device="cpu"))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, str(SCRIPT), json.dumps(spec), str(batch), str(length),
                           str(int(checkpointing)), method],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The meta-device count is the real model's (LoRA: the adapters PEFT adds).
    assert result["params"] == (shape.params if method == "full" else trainable(Job(shape, method="lora")))
    ratio = result["measured"] / planned.peak
    print(f"measured / planned = {ratio:.3f}")
    assert abs(ratio - 1) <= 0.15, (f"measured {result['measured'] / 2**20:.0f} MiB, planned {planned.peak / 2**20:.0f} "
                                    f"MiB ({ratio:.3f}); components: {planned.components}")
