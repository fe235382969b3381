"""Throughput of `kotune serve` with concurrent streams vs the same requests through plain `model.generate`.

    python benchmarks/serve_throughput.py                    # builds a small local model (CPU, a few minutes)
    python benchmarks/serve_throughput.py --model runs/sft   # any model kotune can serve

Both sides decode the same prompts greedily for exactly --max-tokens tokens (EOS ignored), so they do the same
work, with the same number of torch threads (--threads, default 1: on a busy machine several OpenMP threads per
process spin against each other and can make a small model 50x slower, which would flatter the server), on the
same device in the same dtype (a GPU in bf16 where there is one, as `kotune serve` chooses; else the CPU in fp32).
The server runs as a real `kotune serve` process; the peer runs one request after another in this process, after
the server has stopped. Prints generated tokens/s for both, the ratio (target >= 3x with 8 concurrent streams),
and the streams' time to first token (p50/p95).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

QUESTIONS = [
    "한국의 수도는 어디인가요?", "김치찌개 끓이는 법을 알려 주세요.",
    "파이썬으로 리스트를 정렬하는 방법은?", "여름에 가 볼 만한 여행지를 추천해 주세요.",
    "인공지능이 무엇인지 쉽게 설명해 주세요.", "건강하게 잠을 자는 방법은?",
    "한글은 누가 만들었나요?", "좋은 이력서를 쓰는 요령을 알려 주세요.",
    "커피와 차의 차이점은 무엇인가요?", "운동을 꾸준히 하려면 어떻게 해야 하나요?",
    "서울에서 부산까지 가는 방법은?", "책을 빨리 읽는 방법이 있을까요?",
    "고양이와 강아지 중 무엇을 키울까요?", "비 오는 날 할 만한 일을 추천해 주세요.",
    "영어 공부를 시작하려면?", "자기소개를 짧게 해 주세요.",
]


def build_model(out: Path, hidden: int, layers: int) -> Path:
    """A local random model (GPT-NeoX, polyglot-ko's architecture) with the ko_chat template, like an SFT output."""
    from transformers import AutoTokenizer

    from kotune.data.templates import install_template
    from kotune.models.tiny import build_tiny_model

    build_tiny_model(out, arch="gpt-neox", hidden=hidden, layers=layers, heads=max(1, hidden // 64))
    tok = AutoTokenizer.from_pretrained(out)
    install_template(tok, "ko_chat")
    tok.save_pretrained(out)
    return out


def start_server(model: Path, port: int, log: Path, batch: int, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kotune.cli", "serve", str(model), "--port", str(port),
           "--max-batch-size", str(batch), "--max-tokens", "4096", *(["--threads", str(threads)] if threads else [])]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"kotune serve exited:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    sys.exit(f"kotune serve did not start:\n{log.read_text()[-3000:]}")


def stream_one(port: int, model: str, question: str, max_tokens: int) -> tuple[float, int]:
    """One streamed chat completion; returns (seconds to first text, generated tokens)."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        sys.exit(f"HTTP {response.status}: {response.read()[:500]!r}")
    ttft, tokens = None, 0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            ttft = time.perf_counter() - start
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    conn.close()
    return ttft or float("nan"), tokens


def run_server_side(model: Path, args, log: Path) -> dict:
    port = args.port
    proc = start_server(model, port, log, args.concurrency, args.threads)
    try:
        stream_one(port, model.name, "준비", 4)  # warm-up: first-call allocations are not throughput
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.requests)]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda q: stream_one(port, model.name, q, args.max_tokens), questions))
        seconds = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ttfts = sorted(r[0] for r in results)
    return {"tokens": sum(r[1] for r in results), "seconds": seconds, "ttft_p50": statistics.median(ttfts),
            "ttft_p95": ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]}


def run_plain_generate(model: Path, args) -> dict:
    import torch

    from kotune.models.load import load_model, load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = serving_device()
    tok = load_tokenizer(str(model))
    lm = load_model(str(model), attn_implementation="sdpa", dtype=dtype, device=device).eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                       add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
               .to(device) for i in range(args.requests)]
    with torch.inference_mode():
        lm.generate(prompts[0], max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        start, tokens = time.perf_counter(), 0
        for ids in prompts:
            out = lm.generate(ids, max_new_tokens=args.max_tokens, min_new_tokens=args.max_tokens, do_sample=False,
                              pad_token_id=tok.pad_token_id)
            tokens += out.shape[1] - ids.shape[1]
        if device == "cuda":
            torch.cuda.synchronize()
    return {"tokens": tokens, "seconds": time.perf_counter() - start}


def serving_device() -> tuple[str, str]:
    """Device and dtype `kotune serve` picks (Engine.load's dtype "auto"), so both sides run alike."""
    import torch

    if torch.cuda.is_available():
        return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "cpu", "fp32"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model to serve (default: build a small local one)")
    ap.add_argument("--hidden", type=int, default=256, help="hidden size of the built model")
    ap.add_argument("--layers", type=int, default=4, help="layers of the built model")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on both sides (0 = torch's default)")
    args = ap.parse_args()
    if not args.port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            args.port = s.getsockname()[1]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else build_model(Path(tmp) / "bench-model", args.hidden, args.layers)
        served = run_server_side(model, args, Path(tmp) / "server.log")
        plain = run_plain_generate(model, args)
    rate = {k: v["tokens"] / v["seconds"] for k, v in (("served", served), ("plain", plain))}
    described = args.model or f"random GPT-NeoX, hidden {args.hidden}, {args.layers} layers"
    print(f"\nmodel: {described}  requests: {args.requests}  max_tokens: {args.max_tokens}  "
          f"torch threads: {args.threads or 'default'}  cpus: {os.cpu_count()}  device: {' '.join(serving_device())}")
    print("| run | tokens | seconds | tokens/s | TTFT p50 | TTFT p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| plain `generate`, one after another | {plain['tokens']} | {plain['seconds']:.2f} | "
          f"{rate['plain']:.1f} | | |")
    print(f"| `kotune serve`, {args.concurrency} concurrent streams | {served['tokens']} | {served['seconds']:.2f} | "
          f"{rate['served']:.1f} | {served['ttft_p50'] * 1000:.0f} ms | {served['ttft_p95'] * 1000:.0f} ms |")
    ratio = rate["served"] / rate["plain"]
    print(f"\nthroughput ratio: {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
