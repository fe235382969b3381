"""Run in a fresh process: peak host memory of kotune's training step on a random model built from a config.

Prints one JSON line: {"measured": bytes, "params": n}. The measured quantity is the peak resident set size
(VmHWM: the high-water mark of this process's own address space; ru_maxrss would carry the pytest parent's
size over fork and exec) of this process after the model is built and two optimizer steps run, minus the same peak taken just
before the model is built (after the imports and a warm-up step of a 2-layer model, which pages in the code and
kernels the real step uses). glibc is told to serve every allocation over 64 KiB with mmap
(MALLOC_MMAP_THRESHOLD_, set by the caller), so freed tensors leave the RSS at once instead of staying in the heap.
"""

from __future__ import annotations

import json
import sys

import torch

from kotune.common.host_memory import peak_rss_bytes


def build(spec: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**spec)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def step_twice(model, batch: int, length: int, vocab: int, lr: float = 1e-4) -> None:
    """Two optimizer steps as kotune's loop takes them on CPU: AdamW as the loop builds it, the loss through the
    loop's own `_trained_loss_sum` (logits only where a token is trained), gradients set to None after the step."""
    from kotune.training.loop import _accepts_logits_to_keep, _trained_loss_sum

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, fused=None)
    select = _accepts_logits_to_keep(model)
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        ids = torch.randint(0, vocab, (batch, length), generator=generator)
        batch_in = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        loss = _trained_loss_sum(model, batch_in, ids.clone(), select) / ids.numel()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss


def main() -> None:
    spec, batch, length = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    checkpointing, method = sys.argv[4] == "1", sys.argv[5]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    warm = dict(spec, num_hidden_layers=2, hidden_size=64, intermediate_size=128, vocab_size=256,
                num_attention_heads=4, **({"num_key_value_heads": 2} if "num_key_value_heads" in spec else {}))
    step_twice(build(warm), 2, 32, 256)
    before = peak_rss_bytes()
    model = build(spec)
    if checkpointing:  # as kotune's SFT enables it
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if method == "lora":  # kotune's LoRA (r 8, dropout 0.05, the architecture's default targets)
        from kotune.models.lora import apply_lora

        if checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(model, r=8, alpha=16, dropout=0.05, target_modules=None)
    step_twice(model, batch, length, spec["vocab_size"])
    after = peak_rss_bytes()
    print(json.dumps({"measured": after - before, "params": sum(p.numel() for p in model.parameters() if p.requires_grad or method == "full")}))


if __name__ == "__main__":
    main()
