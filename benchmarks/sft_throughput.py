"""SFT throughput: kotune against TRL's SFTTrainer at its defaults and against a plain PyTorch loop.

    .venv/bin/python benchmarks/sft_throughput.py            # ~4 min on 2 CPU cores
    .venv/bin/python benchmarks/sft_throughput.py --quick    # smoke test, ~1 min

The same job three ways: one tiny GPT-NeoX model built once (random weights, saved, loaded by every method),
the first `--examples` records of the shipped KoAlpaca v1.0 sample with the `koalpaca` template, max_length
512, `--steps` AdamW optimizer steps of 16 examples (micro-batch 8 x 2 accumulation), lr 1e-3 with the same
cosine schedule (no warm-up), grad-norm clipping 1.0, seed 42, fp32 weights. Only the prompt is masked: every
method trains on the reply + EOS tokens alone, and counts those ("supervised tokens").

- kotune: `kotune.sft.train.run(cfg)`; timings and per-step tokens from its metrics.jsonl (`elapsed_s`).
- plain loop: Alpaca's reference recipe by hand: kotune's tokenized examples, the same examples per step as
  kotune, micro-batches padded to their longest (`pad_sequence`), `model(..., labels=...)` with transformers'
  loss normalised over the global batch (`num_items_in_batch`), AdamW, clipping, cosine schedule.
- TRL: `trl.SFTTrainer` with `trl.SFTConfig` at its defaults (bf16 autocast and gradient checkpointing on),
  setting only what makes it the same job (listed in the printed notes), on a prompt/completion dataset
  rendered with the same template, so it trains on completions only.

Each method runs in its own process (accelerate keeps process-wide state; a fresh process gives every method
the same start), in turn: kotune, plain loop, TRL, then kotune, plain loop again for `--rounds` rounds (TRL only
in the first `--trl-rounds`: it is so much slower that its noise cannot change a verdict), and the best run of
each method is kept: on a shared machine the best run is the one least disturbed. Only training steps are timed, from the end of step 1 to the
end of the last step (model load, tokenization, step 1's warm-up and the final save are left out), the same
way for all three. Every file goes under `--workdir` (a fresh folder under /tmp by default).
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "koalpaca_v1.0.sample.json"
METHODS = ("kotune", "plain", "trl")
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


def kotune_config(job: Job, output_dir: Path):
    from kotune.sft.config import DataConfig, SFTConfig, TrainConfig

    return SFTConfig(
        model=job.model,
        output_dir=str(output_dir),
        data=DataConfig(files=[job.data], template="koalpaca", max_length=job.max_length),
        train=TrainConfig(
            epochs=1.0, max_steps=job.steps, learning_rate=job.learning_rate, lr_scheduler=job.lr_scheduler,
            warmup_ratio=0.0, weight_decay=0.0, global_batch_size=job.global_batch, micro_batch_size=job.micro_batch,
            max_grad_norm=job.max_grad_norm, seed=job.seed, precision="fp32",
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
    examples, _ = prepare_examples(cfg, tokenizer, log=lambda *_: None)
    return tokenizer, examples


# --------------------------------------------------------------------------------------------- workers
# Each returns {"step_end_s": [...], "step_tokens": [...], "losses": [...], "notes": [...]}: the time at the end
# of every optimizer step (any origin), the supervised tokens of that step, and its loss.


def run_kotune(job: Job, workdir: Path) -> dict:
    from kotune.common.metrics import read_metrics
    from kotune.sft.train import run

    out = run(kotune_config(job, workdir / "kotune-out"), log=lambda *_: None)
    rows = read_metrics(out / "metrics.jsonl")
    return {
        "step_end_s": [r["elapsed_s"] for r in rows],
        "step_tokens": [r["trained_tokens"] for r in rows],
        "losses": [r["loss"] for r in rows],
        "notes": ["kotune.sft.train.run: padded, length-sorted micro-batches, fp32, accelerate on CPU"],
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

    ends, tokens, losses = [], [], []
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
        tokens.append(n_trained)
        losses.append(step_loss)
    return {"step_end_s": ends, "step_tokens": tokens, "losses": losses,
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

    settings = dict(
        output_dir=str(output_dir), max_steps=job.steps, per_device_train_batch_size=job.micro_batch,
        gradient_accumulation_steps=job.accumulation, learning_rate=job.learning_rate,
        lr_scheduler_type=job.lr_scheduler, max_grad_norm=job.max_grad_norm, seed=job.seed,
        max_length=job.max_length, logging_steps=1, save_strategy="no", report_to="none",
    )
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
    ends, losses = [], []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

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
    return {"step_end_s": ends, "step_tokens": tokens, "losses": losses,
            "notes": [f"TRL set: {', '.join(f'{k}={v!r}' for k, v in settings.items() if k != 'output_dir')}",
                      f"TRL defaults kept: {defaults}", *(f"TRL changed to run: {c}" for c in changed),
                      f"TRL completion tokens equal kotune's trained tokens for {same}/{len(examples)} examples"]}


WORKERS = {"kotune": run_kotune, "plain": run_plain, "trl": run_trl}


# --------------------------------------------------------------------------------------------- report


@dataclass
class Result:
    method: str
    tokens_per_s: float
    median_step_tokens_per_s: float
    losses: list[float]
    notes: list[str]

    @classmethod
    def from_run(cls, method: str, run: dict) -> "Result":
        ends, tokens = run["step_end_s"], run["step_tokens"]
        if len(ends) < 2:
            raise ValueError(f"{method}: need at least 2 steps to time, got {len(ends)}")
        # Step 1 is warm-up (allocator, first-call dispatch): time steps 2..N for every method alike.
        rates = sorted(n / (b - a) for n, a, b in zip(tokens[1:], ends, ends[1:]))
        return cls(method, sum(tokens[1:]) / (ends[-1] - ends[0]), rates[len(rates) // 2], run["losses"], run["notes"])


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def report(best: dict[str, Result], rounds: list[dict[str, Result]], job: Job, args) -> str:
    k = best["kotune"]
    runs = {m: sum(m in r for r in rounds) for m in METHODS}
    lines = [
        f"tiny GPT-NeoX (hidden {args.hidden}, {args.layers} layers, vocab 4000), {args.examples} KoAlpaca examples, "
        f"{job.steps} steps x {job.global_batch} examples; best of " + ", ".join(f"{n} {m}" for m, n in runs.items())
        + f" run(s); torch threads {_threads()}",
        "",
        "| method | supervised tokens/s | kotune / method | median step tokens/s | loss, steps 1-5 | loss, last 5 steps |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in METHODS:
        r = best[m]
        lines.append(f"| {NAMES[m]} | {r.tokens_per_s:,.0f} | {k.tokens_per_s / r.tokens_per_s:.2f}x | "
                     f"{r.median_step_tokens_per_s:,.0f} | {mean(r.losses[:5]):.3f} | {mean(r.losses[-5:]):.3f} |")
    lines.append("")
    for peer, target in TARGETS.items():
        ratio = k.tokens_per_s / best[peer].tokens_per_s
        lines.append(f"- kotune / {NAMES[peer]}: {ratio:.2f}x (target >= {target}x): {'PASS' if ratio >= target else 'FAIL'}"
                     f" (median step rates: {k.median_step_tokens_per_s / best[peer].median_step_tokens_per_s:.2f}x)")
    per_round = ", ".join(f"{r['kotune'].tokens_per_s / r['plain'].tokens_per_s:.2f}x" for r in rounds)
    lines.append(f"- kotune / plain loop in each round: {per_round}")
    diff = max(abs(a - b) for a, b in zip(best["kotune"].losses, best["plain"].losses))
    lines.append(f"- kotune and the plain loop train on the same examples each step: largest per-step loss "
                 f"difference {diff:.4f}; TRL draws its own order, so compare its first/last means")
    lines += ["", "notes:"] + [f"- {n}" for m in METHODS for n in best[m].notes]
    return "\n".join(lines)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# --------------------------------------------------------------------------------------------- main


NAMES = {"kotune": "kotune", "plain": "plain PyTorch loop", "trl": "TRL SFTTrainer (defaults)"}


def run_worker(method: str, workdir: Path, tag: str) -> dict:
    """Run one method in a fresh process; its result comes back as JSON, its output goes to a log file."""
    result = workdir / f"{tag}.json"
    log = workdir / f"{tag}.log"
    cmd = [sys.executable, __file__, "--worker", method, "--workdir", str(workdir), "--result", str(result)]
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
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
                   help="rounds that also run TRL (default 1: it is >5x slower, so its noise cannot flip a verdict)")
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
        args.result.write_text(json.dumps(WORKERS[args.worker](job, args.workdir / args.result.stem)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kotune-sft-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    job = prepare(workdir, args)
    print(f"workdir {workdir}; model and data ready in {time.perf_counter() - started:.0f}s", flush=True)
    rounds = []
    for i in range(args.rounds):
        results = {}
        for method in METHODS if i < args.trl_rounds else METHODS[:2]:
            t = time.perf_counter()
            results[method] = Result.from_run(method, run_worker(method, workdir, f"{method}-{i + 1}"))
            print(f"round {i + 1}: {method:6s} {results[method].tokens_per_s:8,.0f} supervised tokens/s "
                  f"({time.perf_counter() - t:.0f}s with start-up)", flush=True)
        rounds.append(results)
    best = {m: max((r[m] for r in rounds if m in r), key=lambda r: r.tokens_per_s) for m in METHODS}
    text = report(best, rounds, job, args)
    (workdir / "report.md").write_text(text + "\n")
    print(f"\n{text}\n\n(total {time.perf_counter() - started:.0f}s; report in {workdir / 'report.md'})")


if __name__ == "__main__":
    main()
