"""Peak memory of LoRA vs full fine-tuning on a ~125M-parameter GPT-NeoX (polyglot-ko-shaped, random init), CPU.

Each method runs `kotune sft` for a few steps in its own process; the script reports that process's peak resident
memory (ru_maxrss) and its peak above a process that only imports the same stack (torch, transformers, PEFT,
accelerate, kotune: ~0.5 GB of code and libraries that do not depend on the model). The second figure is the CPU
counterpart of `torch.cuda.max_memory_allocated` on a GPU, which also leaves out the CUDA context and libraries:
model weights, gradients, optimizer state and activations. Target: LoRA ≤ 0.5 × full fine-tuning, on that figure;
the raw ratio is printed beside it.

    .venv/bin/python benchmarks/lora_memory.py [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
from kotune.config import load_config
from kotune.sft.config import SFTConfig
mode, model, out, steps, gc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[6]
if mode == "imports":
    import accelerate, peft, transformers.models.gpt_neox.modeling_gpt_neox  # what training imports, no model
    import kotune.sft.train
else:
    from kotune.sft.train import run
    cfg = load_config(SFTConfig, None, [f"model={model}", f"output_dir={out}", f"method={mode}",
        f"data.files=[{sys.argv[5]}]", "data.template=koalpaca", "data.max_length=256", f"train.max_steps={steps}",
        "train.global_batch_size=4", "train.micro_batch_size=4", f"train.gradient_checkpointing={gc}"])
    run(cfg, log=lambda *_: None)
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_model(folder: Path) -> Path:
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    from kotune.models.tiny import DEFAULT_CORPUS
    from kotune.data.corpus import iter_documents
    from kotune.models.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(iter_documents(DEFAULT_CORPUS[:1]), vocab_size=4000)
    config = GPTNeoXConfig(vocab_size=30080, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=2048, rotary_pct=0.5,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder, sum(p.numel() for p in model.parameters())


def measure(mode: str, model: Path, work: Path, steps: int, data: Path, gc: bool = False) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(model), str(work / mode), str(steps), str(data),
                             "true" if gc else "false"],
                            capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = json.loads((REPO / "data/samples/koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))[:64]
        data = work / "data.json"
        data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        model, n_params = build_model(work / "model")
        base = measure("imports", model, work, args.steps, data)
        rows = {(mode, gc): measure(mode, model, work, args.steps, data, gc) for gc in (False, True) for mode in ("full", "lora")}
    print(f"model: GPT-NeoX {n_params / 1e6:.0f}M parameters (hidden 768, 12 layers, vocab 30080), fp32, CPU, "
          f"{args.steps} steps of 4 x ≤256 tokens; imports only: {base:,.0f} MiB peak RSS")
    print("| gradient checkpointing | full: peak RSS (MiB) | LoRA r=8: peak RSS (MiB) | raw LoRA / full "
          "| above imports: full / LoRA (MiB) | LoRA / full | target ≤ 0.50 |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for gc in (False, True):
        full, lora = rows[("full", gc)], rows[("lora", gc)]
        ratio = (lora - base) / (full - base)
        print(f"| {'on' if gc else 'off'} | {full:,.0f} | {lora:,.0f} | {lora / full:.2f} | {full - base:,.0f} / "
              f"{lora - base:,.0f} | {ratio:.2f} | {'PASS' if ratio <= 0.5 else 'FAIL'} |")


if __name__ == "__main__":
    main()
