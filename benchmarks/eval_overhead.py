"""KoBEST wall time: `kotune eval kobest` against lm-evaluation-harness run directly on the same model and data.

    .venv/bin/python benchmarks/eval_overhead.py             # ~6 min on 2 CPU cores
    .venv/bin/python benchmarks/eval_overhead.py --quick     # smoke test, ~1 min

The same job two ways: one tiny GPT-NeoX model built once (random weights, saved; `--model` takes any other),
all five KoBEST tasks, 0-shot, the first `--limit` test documents of each, batch size 8, fp32 on CPU.

- kotune: `kotune.eval.commands.kobest(...)`, what `kotune eval kobest MODEL --limit N --out DIR` runs: loads the model
  through kotune (`kotune.models.load`), wraps it in lm-eval's HFLM, runs lm-eval, writes kobest.json, lm-eval's
  raw results, report.md and the chart.
- lm-eval: `lm_eval.simple_evaluate(model="hf", model_args="pretrained=MODEL,dtype=float32", ...)`, so lm-eval
  loads the model itself, on kotune's task configs (the same prompts and local data) through a TaskManager that
  indexes only them, then its results written to one JSON file, as `lm_eval --output_path` would.
  Not lm-eval's bundled kobest YAMLs: their `hf_evaluate: true` imports the `evaluate` package and tries the Hub
  for every task (seconds, offline), which would flatter kotune; the peer here pays no cost kotune avoids.

Each run is its own process (a fresh start for both: imports, model load, dataset preparation all count), timed
from launch to exit. Runs alternate kotune, lm-eval, kotune, ... for `--rounds` rounds, and the best run of each method is kept, as
in sft_throughput.py: on a shared machine the best run is the one least disturbed (medians are printed too). Each
process's CPU time (user + system, from the OS) is printed beside it: other jobs on the machine stretch wall time
far more than CPU time, so the CPU ratio tells whether a wall-time gap is kotune's or the machine's.
Both runs must also give the same scores, or the timing compares different work. Target: ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.1  # kotune wall time / lm-eval wall time must be at most this
METHODS = ("kotune", "lm_eval")


def prepare(workdir: Path, args) -> str:
    """The model every run loads: `--model`, or a tiny GPT-NeoX built once under `workdir`."""
    if args.model:
        return args.model
    from kotune.models.tiny import build_tiny_model

    model_dir = workdir / "tiny-base"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, arch="gpt-neox", vocab_size=2000, seed=0)
    return str(model_dir)


# --------------------------------------------------------------------------------------------- workers


def worker_kotune(args) -> dict:
    from kotune.eval.commands import kobest
    from kotune.eval.config import KobestConfig
    from kotune.eval.kobest import TASKS

    data = kobest(KobestConfig(model=args.model, tasks=list(TASKS), shots=[0], limit=args.limit,
                               batch_size=args.batch_size, out=args.out, device="cpu", dtype="fp32"))
    return {s["task"]: {"acc": s["acc"], "f1": s["f1"], "acc_norm": s["acc_norm"]} for s in data["models"][0]["scores"]}


def worker_lm_eval(args) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from kotune.eval.kobest import TASKS, task_configs

    results = simple_evaluate(model="hf", model_args=f"pretrained={args.model},dtype=float32", tasks=task_configs(TASKS),
                              num_fewshot=0, limit=args.limit, batch_size=args.batch_size, device="cpu",
                              task_manager=TaskManager(include_defaults=False), log_samples=False)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return {t: {"acc": results["results"][f"kobest_{t}"]["acc,none"], "f1": results["results"][f"kobest_{t}"]["f1,none"],
                "acc_norm": results["results"][f"kobest_{t}"].get("acc_norm,none")} for t in TASKS}


def launch(method: str, model: str, workdir: Path, run_id: int, args) -> tuple[float, float, dict]:
    """One run in a fresh process; returns (wall seconds from launch to exit, its CPU seconds, scores)."""
    result = workdir / f"{method}_{run_id}.json"
    cmd = [sys.executable, __file__, "--worker", method, "--model", model, "--limit", str(args.limit),
           "--batch-size", str(args.batch_size), "--out", str(workdir / f"{method}_{run_id}"), "--result", str(result)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{method} run failed:\n{proc.stderr[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, json.loads(result.read_text())


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model to evaluate (default: a tiny GPT-NeoX built here)")
    parser.add_argument("--limit", type=int, default=100, help="test documents per task (default 100)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each method, alternating (default 3)")
    parser.add_argument("--quick", action="store_true", help="--limit 10 --rounds 1: a smoke test")
    parser.add_argument("--workdir", default=None, help="where models and outputs go (default: a new folder in /tmp)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        scores = worker_kotune(args) if args.worker == "kotune" else worker_lm_eval(args)
        Path(args.result).write_text(json.dumps(scores))
        return
    if args.quick:
        args.limit, args.rounds = 10, 1

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="eval_overhead_"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = prepare(workdir, args)
    print(f"model {model}; 5 KoBEST tasks, 0-shot, {args.limit} docs each, batch {args.batch_size}, fp32 CPU; "
          f"{args.rounds} alternating rounds; workdir {workdir}")
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    scores: dict[str, dict] = {}
    for r in range(args.rounds):
        for method in METHODS:
            seconds, cpu_seconds, scores[method] = launch(method, model, workdir, r, args)
            times[method].append(seconds)
            cpu[method].append(cpu_seconds)
            print(f"  round {r + 1} {method:8s} {seconds:7.1f} s wall  {cpu_seconds:7.1f} s CPU", flush=True)

    if scores["kotune"] != scores["lm_eval"]:
        sys.exit(f"scores differ, so the runs did different work:\n kotune  {scores['kotune']}\n lm-eval {scores['lm_eval']}")
    best = {m: min(v) for m, v in times.items()}
    med = {m: statistics.median(v) for m, v in times.items()}
    cpu_med = {m: statistics.median(v) for m, v in cpu.items()}
    ratio = best["kotune"] / best["lm_eval"]
    print(f"\nscores identical: {json.dumps(scores['kotune'])}")
    print(f"median wall time: kotune {med['kotune']:.1f} s, lm-eval {med['lm_eval']:.1f} s "
          f"(ratio {med['kotune'] / med['lm_eval']:.3f})")
    print(f"median CPU time:  kotune {cpu_med['kotune']:.1f} s, lm-eval {cpu_med['lm_eval']:.1f} s "
          f"(ratio {cpu_med['kotune'] / cpu_med['lm_eval']:.3f}; CPU time moves less than wall time on a busy machine)")
    print(f"best wall time:   kotune {best['kotune']:.1f} s, lm-eval {best['lm_eval']:.1f} s")
    print(f"ratio kotune / lm-eval (best wall times): {ratio:.3f}  target <= {TARGET}: "
          f"{'PASS' if ratio <= TARGET else 'FAIL'}")


if __name__ == "__main__":
    main()
