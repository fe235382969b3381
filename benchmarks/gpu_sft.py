"""GPU SFT: tokens/s and MFU of kotune's defaults against TRL SFTTrainer's defaults, polyglot-ko-1.3b-shaped, bf16.

    .venv/bin/python benchmarks/gpu_sft.py                 # needs a CUDA GPU; without one prints why and exits 0
    .venv/bin/python benchmarks/gpu_sft.py --smoke         # a tiny shape on CPU: checks the script, not the GPU
    .venv/bin/python benchmarks/gpu_sft.py --compile       # also kotune with train.compile=true

The model is GPT-NeoX with polyglot-ko-1.3b's shape (hidden 2048, 24 layers, 16 heads, vocab 30,080, rotary 0.5),
built from its config with random weights (no download) and saved once. The data are the shipped KoAlpaca v1.0
sample records with the `koalpaca` template, max_length 2048, the same records for every method; each step is 32
examples in one micro-batch (`--micro-batch 32`: an 80-141 GB GPU holds them, and accumulation would only add
launches; lower it where memory runs out), lr 2e-5 cosine, clipping 1.0, fp32 master weights with bf16 autocast.

- kotune: `kotune.sft.train.run` at its defaults (batching and attention chosen by `auto`; LM head only at
  positions that predict a trained token; no gradient checkpointing; fused AdamW on CUDA); precision auto = bf16
  on the GPU. With `--compile`, also the same with `train.compile=true` (torch.compile, inductor).
  On CUDA `batching: auto` packs (one row per micro-batch, sequences kept apart by position_ids) with
  flash-attention where installed, else flex_attention (block-sparse; kotune.training.attention).
- kotune, padded: the same with `train.batching=padded` (length-sorted padded micro-batches, sdpa): what `auto`
  is measured against.
- TRL: `trl.SFTTrainer` with `trl.SFTConfig` at its defaults (bf16, gradient checkpointing, padded batches),
  given only what makes it the same job (benchmarks/sft_throughput.py `trl_settings`).

Each method runs in its own process; only training steps are timed, from the end of step 1 to the end of the last.
Throughput is supervised (trained) tokens per second, the figure both sides train on. MFU uses the usual model
FLOPs (PaLM, appendix B): 6 x parameters (without the input embedding) + 12 x layers x hidden x sequence length per
token processed, prompt tokens included, over the GPU's dense bf16 peak (`--peak-tflops` for GPUs not in the table).
Targets (issue 15): kotune MFU >= 45% and kotune >= 1.5x TRL. Results go to README with the GPU's name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sft_throughput as st  # noqa: E402  (the shared TRL worker, dataset and step timing)

METHODS = ("kotune", "kotune_padded", "trl", "kotune_compile")
NAMES = {"kotune": "kotune (defaults)", "kotune_padded": "kotune, batching=padded",
         "trl": "TRL SFTTrainer (defaults)", "kotune_compile": "kotune, train.compile=true"}
TARGET_MFU, TARGET_VS_TRL = 0.45, 1.5
# Dense bf16 tensor-core peaks from the vendors' data sheets (without sparsity), TFLOP/s.
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
               "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0}
POLYGLOT_KO_1_3B = {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16,
                    "intermediate_size": 8192, "vocab_size": 30080, "rotary_pct": 0.5, "max_position_embeddings": 2048}
SMOKE_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
               "vocab_size": 30080, "rotary_pct": 0.5, "max_position_embeddings": 2048}


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((tf for key, tf in sorted(PEAK_TFLOPS.items(), key=lambda kv: -len(kv[0])) if key in device_name), None)


def build_model(folder: Path, shape: dict) -> dict:
    """polyglot-ko-1.3b's architecture with random weights, saved with a Korean BPE tokenizer; returns its sizes."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    from kotune.data.corpus import iter_documents
    from kotune.models.tiny import DEFAULT_CORPUS
    from kotune.models.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(iter_documents(DEFAULT_CORPUS[:1]), vocab_size=8000)
    config = GPTNeoXConfig(**shape, use_parallel_residual=True, tie_word_embeddings=False,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return model_sizes(folder)


def model_sizes(folder: Path) -> dict:
    """Parameter counts and shape of the model saved in `folder` (built on the meta device: no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    return {"params": total, "params_without_embedding": total - model.get_input_embeddings().weight.numel(),
            "layers": config.num_hidden_layers, "hidden": config.hidden_size}


def data_shape(job: st.Job) -> dict:
    """Token counts of the job's examples: MFU counts every token processed, throughput the trained ones."""
    _, examples = st.tokenizer_and_examples(job)
    lengths = [len(e.input_ids) for e in examples]
    return {"tokens": sum(lengths), "trained": sum(e.num_trained for e in examples),
            "mean_context": sum(n * n for n in lengths) / sum(lengths), "examples": len(examples)}


def flops_per_token(model: dict, data: dict) -> float:
    return 6 * model["params_without_embedding"] + 12 * model["layers"] * model["hidden"] * data["mean_context"]


def run_kotune(job: st.Job, workdir: Path, *, batching: str, compile: bool = False) -> dict:
    from kotune.common.metrics import read_metrics
    from kotune.sft.train import run

    cfg = st.kotune_config(job, workdir / f"kotune-{batching}{'-compile' if compile else ''}")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision="auto", batching=batching,
                                                             compile=compile))
    out = run(cfg, log=lambda *_: None)
    rows = read_metrics(out / "metrics.jsonl")
    chosen = json.loads((out / "data_report.json").read_text())
    return {"step_end_s": [r["elapsed_s"] for r in rows], "step_tokens": [r["trained_tokens"] for r in rows],
            "losses": [r["loss"] for r in rows], "peak_gib": _peak_gib(), "batching": chosen["batching"],
            "attention": chosen["attention"],
            "notes": [f"kotune: train.batching={batching} ({chosen['batching']}, attention {chosen['attention']}), "
                      f"precision auto{', train.compile=true' if compile else ''}"]}


def _peak_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def run_trl(job: st.Job, workdir: Path) -> dict:
    return {**st.run_trl(job, workdir), "peak_gib": _peak_gib()}


WORKERS = {"kotune": lambda job, w: run_kotune(job, w, batching="auto"),
           "kotune_padded": lambda job, w: run_kotune(job, w, batching="padded"),
           "trl": run_trl,
           "kotune_compile": lambda job, w: run_kotune(job, w, batching="auto", compile=True)}


def run_worker(method: str, workdir: Path) -> dict:
    import subprocess

    result, log = workdir / f"{method}.json", workdir / f"{method}.log"
    cmd = [sys.executable, __file__, "--worker", method, "--workdir", str(workdir), "--result", str(result)]
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=os.environ, check=False)
    if done.returncode:
        raise RuntimeError(f"{method} failed (exit {done.returncode}); last output of {log}:\n{log.read_text()[-3000:]}")
    return json.loads(result.read_text())


def report(runs: dict, model: dict, data: dict, device: str, peak: float | None, job: st.Job) -> str:
    rate = {m: st.tokens_per_s([r]) for m, r in runs.items()}
    processed_per_trained = data["tokens"] / data["trained"]
    per_token = flops_per_token(model, data)
    lines = [f"{device}; GPT-NeoX {model['params'] / 1e9:.2f}B parameters (polyglot-ko-1.3b shape), "
             f"{data['examples']} KoAlpaca examples (mean {data['tokens'] / data['examples']:.0f} tokens, "
             f"max_length {job.max_length}), {job.steps} steps x {job.global_batch}, bf16 autocast on a GPU", "",
             "| method | trained tokens/s | all tokens/s | MFU | kotune / method | peak GPU memory (GiB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    mfu = {}
    for m, r in runs.items():
        all_tokens = rate[m] * processed_per_trained
        mfu[m] = all_tokens * per_token / (peak * 1e12) if peak else None
        mem = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "n/a"
        lines.append(f"| {NAMES[m]} | {rate[m]:,.0f} | {all_tokens:,.0f} | "
                     f"{f'{mfu[m]:.1%}' if mfu[m] is not None else 'n/a'} | {rate['kotune'] / rate[m]:.2f}x | {mem} |")
    best = max((m for m in runs if m != "trl"), key=lambda m: rate[m])
    lines.append("")
    if peak:
        lines.append(f"- MFU of {NAMES[best]}: {mfu[best]:.1%} (target >= {TARGET_MFU:.0%}): "
                     f"{'PASS' if mfu[best] >= TARGET_MFU else 'FAIL'}; peak {peak:.0f} TFLOP/s bf16 dense")
    else:
        lines.append(f"- MFU: unknown peak for {device!r}; pass --peak-tflops")
    ratio = rate[best] / rate["trl"]
    lines.append(f"- {NAMES[best]} / TRL: {ratio:.2f}x (target >= {TARGET_VS_TRL}x): "
                 f"{'PASS' if ratio >= TARGET_VS_TRL else 'FAIL'}")
    auto = runs["kotune"]
    if auto["batching"] == "padded":
        lines.append(f"- auto chose padded batches ({auto['attention']}): both kotune rows pad")
    else:  # issue 15: auto never packs where packing is slower
        packing = rate["kotune"] / rate["kotune_padded"]
        lines.append(f"- auto's padding-free ({auto['attention']}) / padded: {packing:.2f}x (auto must choose the "
                     f"faster, >= 1.0x): {'PASS' if packing >= 1.0 else 'FAIL: auto should pad on this GPU'}")
    lines += ["", "notes:"] + [f"- {n}" for m in runs for n in runs[m]["notes"]]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 20; --smoke: 3)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not in the table")
    p.add_argument("--smoke", action="store_true", help="tiny shape, runs on CPU: checks the script end to end")
    p.add_argument("--micro-batch", type=int, default=32,
                   help="examples per forward pass (default 32 = the whole step, no accumulation)")
    p.add_argument("--compile", action="store_true", help="also measure kotune with train.compile=true")
    p.add_argument("--model", type=Path, default=None,
                   help="an already built model folder to use (default: build polyglot-ko-1.3b's shape in workdir)")
    p.add_argument("--workdir", type=Path, default=None, help="model, logs and results (default: new /tmp folder)")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps = args.steps or (3 if args.smoke else 20)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        job = st.Job(**json.loads((args.workdir / "job.json").read_text()))
        args.result.write_text(json.dumps(WORKERS[args.worker](job, args.workdir)))
        return 0
    import torch

    if not torch.cuda.is_available() and not args.smoke:
        print("skipped: no CUDA GPU on this machine (benchmarks/gpu_sft.py measures the GPU path; --smoke checks "
              "the script on CPU)")
        return 0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (smoke run: numbers mean nothing)"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kotune-gpu-sft-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model_dir = args.model or workdir / "model"
    shape = SMOKE_SHAPE if args.smoke else POLYGLOT_KO_1_3B
    model = model_sizes(model_dir) if args.model else build_model(model_dir, shape)
    records = json.loads(st.SAMPLE.read_text(encoding="utf-8"))[: args.steps * 32]
    (workdir / "data.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    job = st.Job(model=str(model_dir), data=str(workdir / "data.json"), steps=args.steps, global_batch=32,
                 micro_batch=args.micro_batch, learning_rate=2e-5, max_length=2048)
    (workdir / "job.json").write_text(json.dumps(job.__dict__, indent=1))
    data = data_shape(job)
    print(f"workdir {workdir}; model ({model['params'] / 1e9:.2f}B) and data ready in "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    runs = {}
    for method in [m for m in METHODS if m != "kotune_compile" or args.compile]:
        t = time.perf_counter()
        runs[method] = run_worker(method, workdir)
        print(f"{method}: {st.tokens_per_s([runs[method]]):,.0f} trained tokens/s "
              f"({time.perf_counter() - t:.0f}s with start-up)", flush=True)
    peak = peak_tflops(device, args.peak_tflops) if torch.cuda.is_available() else None
    text = report(runs, model, data, device, peak, job)
    (workdir / "report.md").write_text(text + "\n")
    print(f"\n{text}\n\n(report in {workdir / 'report.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
