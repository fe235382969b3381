"""Shape-true smoke test: a polyglot-ko-1.3b-shaped model (random weights, real config) through the real CLI on
CPU: LoRA SFT (the 12.8B LoRA recipe) 2 steps at length 256 -> `kotune lora merge` -> DPO LoRA 1 step -> `kotune
chat` generating 8 tokens -> `kotune serve` answering one request from the official `openai` client. Each process's
peak RSS is measured (VmHWM, polled while it runs) and held under a bound derived from the parameter count.

Not in the default run (371 s on 2 cores; peaks 5.4-7.8 GiB against a bound of 8.9): `pytest -m realsize tests/realsize`, wrapped on shared
machines in `flock /tmp/kotune-heavy.lock`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from kotune_test_paths import REPO, free_port, stop, wait_ready

from kotune.common.host_memory import peak_rss_bytes

pytestmark = pytest.mark.realsize
HERE = Path(__file__).resolve().parent
GiB = 2**30
# What a CPU process holds besides the model: torch, transformers, tokenizers and data (~0.7 GiB measured for a
# tiny model) and activations of one 256-token sequence of a 2048-wide, 24-layer model with gradient
# checkpointing (~0.1 GiB); 1.5 GiB leaves room for allocator slack.
RUNTIME_BYTES = 1.5 * GiB


def peak_bound(params: int) -> float:
    """Most RSS one process may reach: the weights in fp32 (4 bytes a parameter, CPU training and serving compute
    in fp32 or under bf16 autocast), bf16 copies autocast makes of them (2 bytes), and the runtime. A second
    fp32 copy (e.g. a DPO reference deep-copied beside the policy, or a merge that keeps both) would break it."""
    return 6 * params + RUNTIME_BYTES


def watch_peak(proc: subprocess.Popen) -> Callable[[], int]:
    """Poll `proc`'s own peak RSS (VmHWM) every 0.1 s from a thread; the function returned waits for the process to
    exit and gives the highest reading. Not wait4's ru_maxrss: Linux carries that across fork and exec, so a child
    of this pytest process would report pytest's size at fork as its own peak. VmHWM is a high-water mark, so the
    polling misses only what the child adds in its last 0.1 s, while it exits."""
    readings = [0]

    def poll() -> None:
        while (peak := peak_rss_bytes(proc.pid)) is not None and proc.poll() is None:
            readings.append(peak)
            time.sleep(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()

    def peak() -> int:
        thread.join()
        return max(readings)

    return peak


def run_measured(args: list[str], log: Path, *, stdin: str | None = None, timeout: float = 900) -> tuple[int, int]:
    """Run `args`, output into `log`; returns (exit code, peak RSS in bytes of that process)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, text=True)
    peak = watch_peak(proc)
    if stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, peak()


def kotune(*args: str) -> list[str]:
    return [sys.executable, "-m", "kotune.cli", *map(str, args)]


def check(name: str, code: int, peak: int, log: Path, bound: float, peaks: dict) -> None:
    assert code == 0, f"{name} exited {code}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    peaks[name] = peak
    assert peak < bound, f"{name}: peak RSS {peak / GiB:.2f} GiB over the bound {bound / GiB:.2f} GiB"


def test_polyglot_ko_1_3b_shape_sft_dpo_generate_serve(tmp_path):
    from shape_true import parameter_count

    base, peaks = tmp_path / "base", {}
    code, peak = run_measured([sys.executable, str(HERE / "shape_true.py"), str(base)], tmp_path / "build.log")
    assert code == 0, (tmp_path / "build.log").read_text()[-3000:]
    params = parameter_count(base)
    assert 1.3e9 < params < 1.4e9, params  # polyglot-ko-1.3b: 1,331,810,304
    bound = peak_bound(params)

    sft = tmp_path / "sft"
    log = tmp_path / "sft.log"
    check("sft", *run_measured(kotune(
        "sft", "recipes/sft/polyglot-ko-12.8b_lora.yaml", f"model={base}", f"output_dir={sft}",
        "data.files=[data/samples/koalpaca_v1.0.sample.json]", "data.max_length=256", "train.max_steps=2",
        "train.global_batch_size=2", "train.micro_batch_size=1"), log), log, bound, peaks)
    rows = [r for r in map(json.loads, (sft / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2] and all(r["grad_norm"] > 0 for r in rows)
    adapter = (sft / "adapter_model.safetensors").stat().st_size
    assert adapter < 0.01 * params, adapter  # the adapter alone, not the base

    merged, log = tmp_path / "merged", tmp_path / "merge.log"
    check("lora merge", *run_measured(kotune("lora", "merge", sft, "--out", merged), log), log, bound, peaks)
    # the merged model keeps the base's fp16 storage: 2 bytes a parameter, not fp32's 4
    assert (merged / "model.safetensors").stat().st_size < 2.01 * params

    dpo, log = tmp_path / "dpo", tmp_path / "dpo.log"
    check("dpo", *run_measured(kotune(
        "dpo", "recipes/preference/chatkoalpaca_polyglot-ko-1.3b_dpo.yaml", f"model={merged}", f"output_dir={dpo}",
        "method=lora", "data.files=[data/samples/vaiv_preference.sample.json]", "data.eval_files=[]",
        "data.eval_fraction=0", "data.max_length=256", "data.max_pairs=8", "train.max_steps=1",
        "train.global_batch_size=1", "train.micro_batch_size=1"), log), log, bound, peaks)
    assert (dpo / "adapter_model.safetensors").is_file()

    log = tmp_path / "chat.log"
    check("chat", *run_measured(kotune("chat", dpo, "--max-new-tokens", "8", "--temperature", "0", "--threads", "2"),
                                log, stdin="한국의 수도는 어디인가요?\n"), log, bound, peaks)
    # random weights: greedy decoding picks EOS (1 of 30,080 tokens) first with negligible probability, so the
    # reply runs to the 8-token limit
    assert "(reply cut at 8 tokens" in log.read_text()

    check("serve", *serve_one_request(dpo, tmp_path / "serve.log"), tmp_path / "serve.log", bound, peaks)
    print("peak RSS (GiB):", {k: round(v / GiB, 2) for k, v in peaks.items()}, "bound", round(bound / GiB, 2))


def serve_one_request(model: Path, log: Path, timeout: float = 600) -> tuple[int, int]:
    """Start `kotune serve`, send one chat completion through the `openai` client, stop it with SIGTERM;
    returns (exit code, peak RSS)."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(kotune("serve", model, "--port", port, "--threads", "2"), cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url, peak = f"http://127.0.0.1:{port}", watch_peak(proc)
    try:
        wait_ready(url, proc, log, timeout)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=timeout)
        reply = client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": "안녕하세요"}],
                                               max_tokens=8, temperature=0)
        assert reply.choices[0].finish_reason in ("stop", "length") and 1 <= reply.usage.completion_tokens <= 8
    finally:
        stop(proc, timeout=30)
    return (0 if proc.returncode in (0, -15) else proc.returncode), peak()
