"""SFT throughput: kotune against TRL's SFTTrainer at its defaults, a plain loop, and its own padding-free batches.

    .venv/bin/python benchmarks/sft_throughput.py                # ~5 min (1 torch thread per method)
    .venv/bin/python benchmarks/sft_throughput.py --threads 0    # torch's default: one thread per core
    .venv/bin/python benchmarks/sft_throughput.py --quick        # smoke test, ~1 min

The same job three ways: one tiny GPT-NeoX model built once (random weights, saved, loaded by every method),
the first `--examples` records of the shipped KoAlpaca v1.0 sample with the `koalpaca` template, max_length
512, `--steps` AdamW optimizer steps of 16 examples (micro-batch 8 x 2 accumulation), lr 1e-3 with the same
cosine schedule (no warm-up), grad-norm clipping 1.0, seed 42, fp32 weights. Only the prompt is masked: every
method trains on the reply + EOS tokens alone, and counts those ("supervised tokens").

- kotune: `kotune.sft.train.run(cfg)`; timings and per-step tokens from its metrics.jsonl (`elapsed_s`).
- plain loop: Alpaca's reference recipe by hand: kotune's tokenized examples, the same examples per step as
  kotune, micro-batches padded to their longest (`pad_sequence`), `model(..., labels=...)` with transformers'
  loss normalised over the global batch (`num_items_in_batch`), AdamW, clipping, cosine schedule.
- kotune, padding-free: the same run with `train.batching=padding_free` (one packed row per micro-batch, with the
  attention kotune picks for packed rows on this device: flash-attention or flex_attention on CUDA, sdpa's dense
  packed mask on CPU, where flex_attention has no backward). The report checks that `batching: auto` chose the
  faster of the two here.
- TRL: `trl.SFTTrainer` with `trl.SFTConfig` at its defaults (bf16 autocast and gradient checkpointing on),
  setting only what makes it the same job (listed in the printed notes), on a prompt/completion dataset
  rendered with the same template, so it trains on completions only.

Each method runs in its own process (accelerate keeps process-wide state; a fresh process gives every method
the same start), in turn: kotune, plain loop, padding-free, TRL, then the first three again, for `--rounds` rounds (TRL
only in the first `--trl-rounds`: it is several times slower, so its noise cannot flip its verdict). Only
training steps are timed, from the end of step 1 to the end of the last step (model load, tokenization, step 1's
warm-up and the final save are left out), the same way for all three. A method run several times sees the same
steps each time, so each step counts with its fastest run: on a shared machine that is the least disturbed one.
kotune is compared with as many of its own runs as the peer had. Every file goes under `--workdir` (a fresh
folder under /tmp by default).

Every method gets one torch thread by default. On a machine other programs share, torch's default of one thread
per core is fragile: every parallel region waits for the thread another program has pushed off its core, and a
step can take 30 times longer; measured on this project's 2-core machine, kotune / plain loop of single runs
spread from 0.4x to 24x with 2 threads and from 1.46x to 1.60x with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "koalpaca_v1.0.sample.json"
METHODS = ("kotune", "plain", "padding_free", "trl")
EVERY_ROUND = METHODS[:3]  # TRL only in the first --trl-rounds
TARGETS = {"trl": 2.5, "plain": 0.9}  # kotune tokens/s must be at least this times the peer's


@dataclass(frozen=True)
class Job:
    """What every method trains; written to job.json and read by each worker process."""

    model: str
    data: str
    steps: int
    global_batch: int = 16
    micro_batch: int = 8
    learning_rate: float = 1e-3
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    max_length: int = 512
    seed: int = 42

    @property
    def accumulation(self) -> int:
        return self.global_batch // self.micro_batch


# --------------------------------------------------------------------------------------------- setup


def prepare(workdir: Path, args) -> Job:
    """Build the tiny model and the data subset once; every worker loads these same files."""
    from kotune.models.tiny import build_tiny_model

    model_dir = workdir / "tiny-base"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, arch="gpt-neox", hidden=args.hidden, layers=args.layers, heads=4, seed=0)
    records = json.loads(SAMPLE.read_text(encoding="utf-8"))[: args.examples]
    data = workdir / f"koalpaca_first{len(records)}.json"
    data.write_text(json.dumps(records, ensure_ascii=False, indent=0), encoding="utf-8")
    job = Job(model=str(model_dir), data=str(data), steps=args.steps)
    (workdir / "job.json").write_text(json.dumps(job.__dict__, indent=1))
    return job


def load_job(workdir: Path) -> Job:
    return Job(**json.loads((workdir / "job.json").read_text()))


def kotune_config(job: Job, output_dir: Path, batching: str = "auto"):
    from kotune.sft.config import DataConfig, SFTConfig, SFTTrainConfig

    return SFTConfig(
        model=job.model,
        output_dir=str(output_dir),
        # Nothing held out: both sides train on every example, and no held-out scoring sits inside kotune's steps.
        data=DataConfig(files=[job.data], template="koalpaca", max_length=job.max_length, eval_fraction=0.0),
        train=SFTTrainConfig(
            epochs=1.0, max_steps=job.steps, learning_rate=job.learning_rate, lr_scheduler=job.lr_scheduler,
            warmup_ratio=0.0, weight_decay=0.0, global_batch_size=job.global_batch, micro_batch_size=job.micro_batch,
            max_grad_norm=job.max_grad_norm, seed=job.seed, precision="fp32", batching=batching,
        ),
    )


def tokenizer_and_examples(job: Job):
    """The tokenizer with the koalpaca template installed, and kotune's tokenized, masked examples."""
    from kotune.data.templates import install_template
    from kotune.models.load import load_tokenizer
    from kotune.sft.train import prepare_examples

    tokenizer = load_tokenizer(job.model)
    install_template(tokenizer, "koalpaca")
    cfg = kotune_config(job, Path(tempfile.gettempdir()) / "unused")  # only its data section is read
    examples, _held_out, _ = prepare_examples(cfg, tokenizer, log=lambda *_: None)
    return tokenizer, examples


# --------------------------------------------------------------------------------------------- workers
# Each returns {"step_end_s": [...], "step_tokens": [...], "losses": [...], "notes": [...]}: the time at the end
# of every optimizer step (any origin), the supervised tokens of that step, and its loss.


def run_kotune(job: Job, workdir: Path, batching: str = "auto") -> dict:
    import tqdm.auto

    from kotune.common.metrics import read_metrics
    from kotune.sft.train import run

    cpu = []

    class StepClock(tqdm.auto.tqdm):
        """run() advances its progress bar once per optimizer step: note the process CPU time there."""

        def update(self, n=1):
            cpu.append(time.process_time())
            return super().update(n)

    tqdm.auto.tqdm = StepClock  # run() imports it when called
    out = run(kotune_config(job, workdir / "kotune-out", batching), log=lambda *_: None)
    rows = read_metrics(out / "metrics.jsonl")
    chosen = json.loads((out / "data_report.json").read_text())
    return {
        "batching": chosen["batching"], "attention": chosen["attention"],
        "step_end_s": [r["elapsed_s"] for r in rows],
        "step_end_cpu_s": cpu,
        "step_tokens": [r["trained_tokens"] for r in rows],
        "losses": [r["loss"] for r in rows],
        "notes": [(f"kotune (train.batching={batching}): `kotune.sft.train.run` with its defaults beyond the job "
                   f"({chosen['batching']} batches, attention {chosen['attention']}, LM head only at positions that "
                   "predict a trained token, accelerate), fp32")],
    }


def run_plain(job: Job, workdir: Path) -> dict:
    """Alpaca's recipe in plain PyTorch, on the same examples per step as kotune (same BatchPlan)."""
    import torch
    from torch.nn.utils.rnn import pad_sequence
    from transformers import AutoModelForCausalLM, get_scheduler

    from kotune.data.batching import BatchPlan

    tokenizer, examples = tokenizer_and_examples(job)
    torch.manual_seed(job.seed)
    model = AutoModelForCausalLM.from_pretrained(job.model, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.learning_rate, weight_decay=0.0)
    scheduler = get_scheduler(job.lr_scheduler, optimizer, num_warmup_steps=0, num_training_steps=job.steps)
    plan = BatchPlan(len(examples), job.global_batch, job.micro_batch, job.seed, 1.0, job.steps)
    pad = tokenizer.pad_token_id

    ends, cpu, tokens, losses = [], [], [], []
    for step in range(job.steps):
        indices = plan.step_examples(step)
        n_trained = sum(examples[i].num_trained for i in indices)
        step_loss = 0.0
        for k in range(0, len(indices), job.micro_batch):
            micro = [examples[i] for i in indices[k : k + job.micro_batch]]
            input_ids = pad_sequence([torch.tensor(e.input_ids) for e in micro], batch_first=True, padding_value=pad)
            labels = pad_sequence([torch.tensor(e.labels) for e in micro], batch_first=True, padding_value=-100)
            attention_mask = pad_sequence([torch.ones(len(e.input_ids), dtype=torch.long) for e in micro], batch_first=True)
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False,
                        num_items_in_batch=n_trained)
            out.loss.backward()
            step_loss += out.loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), job.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(time.perf_counter())
        cpu.append(time.process_time())
        tokens.append(n_trained)
        losses.append(step_loss)
    return {"step_end_s": ends, "step_end_cpu_s": cpu, "step_tokens": tokens, "losses": losses,
            "notes": ["plain PyTorch: pad_sequence to the longest of each random micro-batch, HF loss, fp32"]}


class _CountingCollator:
    """Passes batches through unchanged and records the supervised tokens of each, in order."""

    def __init__(self, inner):
        self.inner, self.counts = inner, []

    def __call__(self, features):
        batch = self.inner(features)
        self.counts.append(int((batch["labels"] != -100).sum()))
        return batch


def trl_settings(job: Job, output_dir: Path) -> tuple[dict, list[str]]:
    """The SFTConfig arguments that make TRL run the same job; everything else stays at TRL's defaults."""
    import torch

    settings = {
        "output_dir": str(output_dir), "max_steps": job.steps, "per_device_train_batch_size": job.micro_batch,
        "gradient_accumulation_steps": job.accumulation, "learning_rate": job.learning_rate,
        "lr_scheduler_type": job.lr_scheduler, "max_grad_norm": job.max_grad_norm, "seed": job.seed,
        "max_length": job.max_length, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
    }
    changed = []
    if not torch.cuda.is_available():
        # transformers refuses bf16 without a GPU unless use_cpu is set ("Your setup doesn't support bf16/gpu");
        # use_cpu=True is the nearest setting that runs and keeps TRL's bf16 default.
        settings["use_cpu"] = True
        changed.append("use_cpu=True (TrainingArguments refuses TRL's default bf16=True on a machine without GPU otherwise)")
    return settings, changed


def trl_dataset(job: Job, tokenizer):
    """Prompt/completion pairs rendered with the koalpaca template; the completion is reply + EOS."""
    from datasets import Dataset

    from kotune.data.loading import load_examples
    from kotune.data.tokenize import render_segments

    rows = []
    for conversation in load_examples([job.data]).examples:
        segments = render_segments(tokenizer, conversation)
        assert [trained for _, trained in segments] == [False, True], "KoAlpaca examples are single-turn"
        rows.append({"prompt": segments[0][0], "completion": segments[1][0]})
    return Dataset.from_list(rows)


def run_trl(job: Job, workdir: Path) -> dict:
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer, examples = tokenizer_and_examples(job)
    settings, changed = trl_settings(job, workdir / "trl-out")
    model = AutoModelForCausalLM.from_pretrained(job.model)  # fp32, the same weights every method starts from
    ends, cpu, losses = [], [], []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())
            cpu.append(time.process_time())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    config = SFTConfig(**settings)
    trainer = SFTTrainer(model=model, args=config, train_dataset=trl_dataset(job, tokenizer),
                         processing_class=tokenizer, callbacks=[Timer()])
    counting = _CountingCollator(trainer.data_collator)
    trainer.data_collator = counting
    trl_trained = [sum(1 for x in labels if x != -100) for labels in trainer.train_dataset["labels"]]
    same = sum(a == e.num_trained for a, e in zip(trl_trained, examples))
    trainer.train()
    ga = job.accumulation
    # Batches are collated in order; any extra ones at the end were fetched ahead and never trained on.
    tokens = [sum(counting.counts[s * ga : (s + 1) * ga]) for s in range(len(ends))]
    defaults = (f"bf16={config.bf16}, gradient_checkpointing={config.gradient_checkpointing}, optim={config.optim}, "
                f"padding_free={config.padding_free}, packing={config.packing}, "
                f"completion_only_loss={trainer.completion_only_loss}")
    return {"step_end_s": ends, "step_end_cpu_s": cpu, "step_tokens": tokens, "losses": losses,
            "notes": [f"TRL set: {', '.join(f'{k}={v!r}' for k, v in settings.items() if k != 'output_dir')}",
                      f"TRL defaults kept: {defaults}", *(f"TRL changed to run: {c}" for c in changed),
                      f"TRL completion tokens equal kotune's trained tokens for {same}/{len(examples)} examples"]}


WORKERS = {"kotune": run_kotune, "plain": run_plain, "trl": run_trl,
           "padding_free": lambda job, workdir: run_kotune(job, workdir, "padding_free")}


# --------------------------------------------------------------------------------------------- report


CLOCK = {"wall": "step_end_s", "cpu": "step_end_cpu_s"}


def step_times(run: dict, clock: str) -> list[float]:
    """Seconds of steps 2..N. Step 1 is warm-up (allocator, first-call dispatch) and is left out for every method."""
    ends = run[CLOCK[clock]]
    return [b - a for a, b in pairwise(ends)]


def tokens_per_s(runs: list[dict], clock: str = "wall") -> float:
    """Supervised tokens of steps 2..N over the sum, step by step, of the fastest of `runs` at that step.

    A shared machine slows a run for seconds at a time; a method run several times on the same steps (same data,
    same order) is best described by each step's least-disturbed time.
    """
    tokens = runs[0]["step_tokens"][1:]
    if any(r["step_tokens"][1:] != tokens for r in runs):  # not the same steps: fall back to the best whole run
        return max(sum(r["step_tokens"][1:]) / sum(step_times(r, clock)) for r in runs)
    return sum(tokens) / sum(min(ts) for ts in zip(*(step_times(r, clock) for r in runs)))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def report(runs: dict[str, list[dict]], job: Job, args) -> str:
    """The Markdown table, the verdicts and the notes."""
    clock = args.clock
    lines = [
        (f"tiny GPT-NeoX (hidden {args.hidden}, {args.layers} layers, vocab 4000), first {args.examples} KoAlpaca "
         f"v1.0 examples, {job.steps} steps x {job.global_batch} examples, torch threads {args.threads or _threads()}, "
         f"{clock} clock"),
        "",
        ("| method | runs | supervised tokens/s | kotune / method | best whole run, tokens/s | loss, steps 1-5 "
         "| loss, last 5 steps |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rate = {m: tokens_per_s(runs[m], clock) for m in METHODS if runs[m]}
    # kotune against the same number of its own runs as the peer had, so neither gets more chances at a quiet moment
    ratio = {m: tokens_per_s(runs["kotune"][: len(runs[m])], clock) / rate[m] for m in rate}
    for m, r_m in rate.items():
        whole = max(sum(r["step_tokens"][1:]) / sum(step_times(r, clock)) for r in runs[m])
        losses = runs[m][0]["losses"]
        lines.append(f"| {NAMES[m]} | {len(runs[m])} | {r_m:,.0f} | {ratio[m]:.2f}x | {whole:,.0f} | "
                     f"{mean(losses[:5]):.3f} | {mean(losses[-5:]):.3f} |")
    lines.append("")
    for peer, target in TARGETS.items():
        if peer in ratio:
            verdict = "PASS" if ratio[peer] >= target else "FAIL"
            lines.append(f"- kotune / {NAMES[peer]}: {ratio[peer]:.2f}x (target >= {target}x): {verdict}")
    each = ", ".join(f"{tokens_per_s([k], clock) / tokens_per_s([p], clock):.2f}x"
                     for k, p in zip(runs["kotune"], runs["plain"]))
    lines.append(f"- kotune / plain loop, whole runs side by side: {each} (the spread is the machine's noise)")
    diff = max(abs(a - b) for a, b in zip(runs["kotune"][0]["losses"], runs["plain"][0]["losses"]))
    lines.append(f"- kotune and the plain loop train on the same examples at every step: largest per-step loss "
                 f"difference {diff:.4f}; TRL draws its own order (and trains in bf16), so compare its first and last means")
    lines += batching_verdict(runs, clock)
    lines += ["", "notes:"] + [f"- {n}" for m in METHODS if runs[m] for n in runs[m][0]["notes"]]
    return "\n".join(lines)


def batching_verdict(runs: dict[str, list[dict]], clock: str) -> list[str]:
    """kotune's `batching: auto` against padding-free on this machine: auto must have chosen the faster."""
    auto, packed = runs["kotune"], runs["padding_free"]
    if not packed:
        return []
    n = min(len(auto), len(packed))  # as many runs of each, so neither gets more chances at a quiet moment
    ratio = tokens_per_s(auto[:n], clock) / tokens_per_s(packed[:n], clock)
    chose = auto[0]["batching"]
    if chose == "padding_free":  # both rows packed: the comparison with padded batches is gpu_sft.py's
        return [f"- auto chose padding_free ({auto[0]['attention']}): both kotune rows ran packed ({ratio:.2f}x)"]
    verdict = "PASS" if ratio >= 1.0 else "FAIL: padding-free is faster here, auto should pack"
    diff = max(abs(a - b) for a, b in zip(auto[0]["losses"], packed[0]["losses"]))
    return [f"- padded (auto's choice, {auto[0]['attention']}) / padding-free ({packed[0]['attention']}): "
            f"{ratio:.2f}x (auto must choose the faster, >= 1.0x): {verdict}",
            f"- padded and padding-free train on the same examples at every step: largest per-step loss difference "
            f"{diff:.2g} (packing is exact)"]


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# --------------------------------------------------------------------------------------------- main


NAMES = {"kotune": "kotune", "plain": "plain PyTorch loop", "trl": "TRL SFTTrainer (defaults)",
         "padding_free": "kotune, batching=padding_free"}


def run_worker(method: str, workdir: Path, tag: str, threads: int | None) -> dict:
    """Run one method in a fresh process; its result comes back as JSON, its output goes to a log file."""
    result = workdir / f"{tag}.json"
    log = workdir / f"{tag}.log"
    cmd = [sys.executable, __file__, "--worker", method, "--workdir", str(workdir), "--result", str(result)]
    cmd += ["--threads", str(threads)] if threads else []
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})}
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env, check=False)
    if done.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{method} failed (exit {done.returncode}); last output of {log}:\n{tail}")
    return json.loads(result.read_text())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per method (default 30; --quick: 8)")
    p.add_argument("--examples", type=int, default=None, help="first N KoAlpaca records (default: steps x 16, one epoch)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of kotune and plain loop, interleaved (default 3; --quick: 1)")
    p.add_argument("--trl-rounds", type=int, default=1,
                   help="rounds that also run TRL (default 1: it is ~3x slower, so its noise cannot flip its verdict)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every method (default 1, steady on a shared machine; 0: torch's choice)")
    p.add_argument("--clock", choices=CLOCK, default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time, which leaves out time other programs took "
                        "the cores (use with --threads 1 on a busy machine; with more threads it counts spin-waiting)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 8 steps, one round")
    p.add_argument("--hidden", type=int, default=128, help="tiny model width")
    p.add_argument("--layers", type=int, default=4, help="tiny model depth")
    p.add_argument("--workdir", type=Path, default=None, help="where models, logs and results go (default: new /tmp folder)")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps = args.steps or (8 if args.quick else 30)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.examples = args.examples or args.steps * 16
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        job = load_job(args.workdir)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        args.result.write_text(json.dumps(WORKERS[args.worker](job, args.workdir / args.result.stem)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kotune-sft-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    job = prepare(workdir, args)
    print(f"workdir {workdir}; model and data ready in {time.perf_counter() - started:.0f}s", flush=True)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for i in range(args.rounds):
        for method in METHODS if i < args.trl_rounds else EVERY_ROUND:
            t = time.perf_counter()
            runs[method].append(run_worker(method, workdir, f"{method}-{i + 1}", args.threads))
            print(f"round {i + 1}: {method:6s} {tokens_per_s(runs[method][-1:], args.clock):8,.0f} supervised tokens/s "
                  f"({time.perf_counter() - t:.0f}s with start-up)", flush=True)
    text = report(runs, job, args)
    (workdir / "report.md").write_text(text + "\n")
    print(f"\n{text}\n\n(total {time.perf_counter() - started:.0f}s; report in {workdir / 'report.md'})")


if __name__ == "__main__":
    main()
