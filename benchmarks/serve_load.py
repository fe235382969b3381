"""`kotune serve` under load: 500 requests at concurrency 32, a quarter of the clients leaving mid-stream.

    python benchmarks/serve_load.py                       # builds a tiny local model; a few minutes on 2 cores
    python benchmarks/serve_load.py --requests 100 --concurrency 16 --warmup 50

A real `kotune serve` process on 127.0.0.1 (default batch 16 and queue 64, 1 torch thread) gets a warm-up run,
then the load run: chat and text completions, whole and streamed, 8 tokens each, except every fourth request,
which streams up to 1,000 tokens (EOS ignored) and hangs up after its first or second event. Then a burst of
more long requests at once than the batch and queue hold, each kept open until all have their answer, shows
where 429 begins. Prints one verdict line per claim and exits 1 if any fails:

- no 5xx, and every request that was not hung up on is answered in full;
- 429 only past the queue: none while the clients are fewer than the batch plus the queue; in the burst, none
  before the queue filled (more than `--max-queue` accepted), and the server counted each one;
- every disconnected generation stopped: the disconnects the clients made, the server's `requests.disconnected`
  and the engine's `cancelled` (from /health) agree, and nothing is left running, waiting or active;
- memory: the server's resident memory (VmRSS in /proc) after the load run and the burst is within 10% of what
  it was after the warm-up run. The baseline is after warm-up, not after loading: the first requests allocate
  for good (torch's kernels and caches, the tokenizer, the worker threads), which is not a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

LONG_TOKENS = 1000  # a hung-up stream asks for this many: it can only end early by being cancelled
SHORT_TOKENS = 8


@dataclass
class LoadResult:
    """What the clients saw."""

    statuses: Counter = field(default_factory=Counter)
    disconnects: int = 0
    """Streams the clients closed before `data: [DONE]`."""
    problems: list[str] = field(default_factory=list)
    """Requests answered 200 that were not answered in full (or anything not 200 or 429)."""
    seconds: float = 0.0

    def add(self, other: LoadResult) -> None:
        self.statuses += other.statuses
        self.disconnects += other.disconnects
        self.problems += other.problems
        self.seconds += other.seconds


def request_body(model: str, i: int) -> tuple[str, dict, int]:
    """Path, body and how many events to read before hanging up (0: read it all) for request i of a load run."""
    chat, hang_up = (i // 4) % 2 == 0, i % 4 == 3
    body = {"model": model, "max_tokens": LONG_TOKENS if hang_up else SHORT_TOKENS, "seed": i,
            "stream": i % 4 != 1, "ignore_eos": hang_up}
    if chat:
        body["messages"] = [{"role": "user", "content": f"{i}번째 질문입니다"}]
    else:
        body["prompt"] = f"{i}번째 문장:"
    # a chat stream's first event is the assistant role, sent before any token (the request may still wait)
    return ("/v1/chat/completions" if chat else "/v1/completions"), body, (1 + (i // 8) % 2) if hang_up else 0


def check_whole(i: int, data: dict) -> str | None:
    choice, usage = data["choices"][0], data["usage"]
    ok = choice["finish_reason"] in ("stop", "length") and usage["completion_tokens"] <= SHORT_TOKENS
    return None if ok else f"{i}: incomplete {data}"


def check_stream(i: int, events: list[str]) -> str | None:
    if not events or events[-1] != "[DONE]":
        return f"{i}: stream did not end with [DONE]"
    finishes = [c["finish_reason"] for e in events[:-1] for c in json.loads(e)["choices"] if c.get("finish_reason")]
    return None if finishes in (["stop"], ["length"]) else f"{i}: finish reasons {finishes}"


async def one_request(client: httpx.AsyncClient, model: str, i: int, result: LoadResult) -> None:
    path, body, hang_up_after = request_body(model, i)
    async with client.stream("POST", path, json=body) as response:
        result.statuses[response.status_code] += 1
        if response.status_code != 200:
            await response.aread()
            if response.status_code != 429:
                result.problems.append(f"{i}: HTTP {response.status_code} {response.text[:200]}")
            return
        if not body["stream"]:
            problem = check_whole(i, json.loads(await response.aread()))
        else:
            events = []
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
                if hang_up_after and len(events) == hang_up_after:
                    result.disconnects += 1
                    return  # leaving the block closes the connection mid-stream
            problem = check_stream(i, events) if not hang_up_after else f"{i}: a {LONG_TOKENS}-token stream ended"
        if problem:
            result.problems.append(problem)


async def _load(url: str, model: str, requests: int, concurrency: int, headers: dict) -> LoadResult:
    result, slots = LoadResult(), asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, headers=headers, timeout=120) as client:

        async def bounded(i: int) -> None:
            async with slots:
                await one_request(client, model, i, result)

        start = time.perf_counter()
        await asyncio.gather(*(bounded(i) for i in range(requests)))
        result.seconds = time.perf_counter() - start
    return result


def run_load(url: str, model: str, requests: int, concurrency: int, headers: dict | None = None) -> LoadResult:
    """`requests` requests (see `request_body`), at most `concurrency` at a time."""
    return asyncio.run(_load(url, model, requests, concurrency, headers or {}))


async def _burst(url: str, model: str, n: int, headers: dict) -> Counter:
    statuses: Counter = Counter()
    everyone_answered = asyncio.Event()
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, headers=headers, timeout=120) as client:

        async def one(i: int) -> None:
            path, body, _ = request_body(model, 4 * i + 3)  # the long, streamed kind
            async with client.stream("POST", path, json=body) as response:
                statuses[response.status_code] += 1
                if sum(statuses.values()) == n:
                    everyone_answered.set()
                await everyone_answered.wait()  # hold the place in the batch or queue until all are answered

        await asyncio.gather(*(one(i) for i in range(n)))
    return statuses


def run_burst(url: str, model: str, n: int, headers: dict | None = None) -> Counter:
    """`n` long streamed requests at once, each held open until all have a status, then all hung up on.
    Returns the count of each status."""
    return asyncio.run(_burst(url, model, n, headers or {}))


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=10).json()


def wait_idle(url: str, timeout: float = 60) -> dict:
    """/health once nothing is running, waiting or being answered (or after `timeout` seconds, as it is)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = health(url)
        if (stats["running"], stats["waiting"], stats["requests"]["active"]) == (0, 0, 0):
            return stats
        if time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` in MiB (VmRSS from /proc: Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def delta(after: dict, before: dict, key: str) -> int:
    """`key` ('cancelled' or 'requests.disconnected') in /health `after` minus in `before`."""
    def get(stats: dict) -> int:
        for part in key.split("."):
            stats = stats[part]
        return stats
    return get(after) - get(before)


def disconnect_verdict(clients: int, before: dict, after: dict) -> tuple[bool, str]:
    """Every disconnect the clients made stopped its generation, by the server's own counters."""
    server, engine = delta(after, before, "requests.disconnected"), delta(after, before, "cancelled")
    left = {k: after[k] for k in ("running", "waiting")} | {"active": after["requests"]["active"]}
    ok = clients == server == engine and not any(left.values())
    return ok, (f"client disconnects {clients}, server requests.disconnected {server}, engine cancelled {engine}; "
                f"left at the end: {left}")


@dataclass
class Run:
    """Everything one measurement saw: the clients' results, /health and the server's RSS between the phases."""

    requests: int
    """Requests of the load run (all rounds)."""
    concurrency: int
    batch: int
    queue: int
    load: LoadResult
    burst: Counter
    health: dict[str, dict]
    """/health after the warm-up ("warm"), the load run ("load") and the burst ("end")."""
    rss: dict[str, float]
    """VmRSS in MiB after loading ("loaded"), at "warm", after each "round N" of the load run, "load", "end"."""


def measure(url: str, pid: int, requests: int, concurrency: int, warmup: int, batch: int, queue: int,
            rounds: int = 1) -> Run:
    """Warm-up run, load run (`rounds` times, counted together) and burst against the server at `url` (process
    `pid`, with this batch and queue)."""
    model = health(url)["model"]
    rss, stats = {"loaded": rss_mib(pid)}, {}
    run_load(url, model, warmup, concurrency)
    stats["warm"], rss["warm"] = wait_idle(url), rss_mib(pid)
    load = LoadResult()
    for i in range(rounds):
        load.add(run_load(url, model, requests, concurrency))
        stats["load"], rss[f"round {i + 1}"] = wait_idle(url), rss_mib(pid)
    rss["load"] = rss[f"round {rounds}"]
    burst = run_burst(url, model, batch + queue + 16)
    stats["end"], rss["end"] = wait_idle(url), rss_mib(pid)
    return Run(requests * rounds, concurrency, batch, queue, load, burst, stats, rss)


def verdicts(run: Run, server_log: str) -> list[tuple[str, bool, str]]:
    """(claim, holds, what was measured) for each claim of the module docstring."""
    out = []
    end = run.health["end"]
    bad = sum(n for status, n in (run.load.statuses + run.burst).items() if status >= 500)
    errors, traceback = end["requests"]["server_errors"] + end["requests"]["failed"], "Traceback" in server_log
    out.append(("no 5xx", bad == 0 and errors == 0 and not traceback,
                f"5xx answers {bad}, server errors and failed generations {errors}, traceback in the log: "
                f"{traceback}"))
    out.append(("every other request answered in full", not run.load.problems, f"{run.load.problems[:3]}"))
    rejected, n = delta(end, run.health["load"], "requests.rejected"), sum(run.burst.values())
    ok = (run.load.statuses[429] == 0 and run.burst[429] >= 1 and run.burst[200] > run.queue
          and rejected == run.burst[429] and set(run.burst) <= {200, 429})
    out.append(("429 only past the queue", ok,
                f"load run ({run.concurrency} clients, batch {run.batch} + queue {run.queue}): "
                f"{run.load.statuses[429]} of {run.requests}; burst of {n}: {run.burst[200]} accepted, "
                f"{run.burst[429]} answered 429 (server counted {rejected})"))
    ok, detail = disconnect_verdict(run.load.disconnects, run.health["warm"], run.health["load"])
    out.append(("every disconnected generation stopped (load run)", ok, detail))
    ok, detail = disconnect_verdict(run.burst[200], run.health["load"], end)
    out.append(("every disconnected generation stopped (burst)", ok, detail))
    ratio = run.rss["end"] / run.rss["warm"]
    out.append(("memory back to its level after warm-up (±10%)", abs(ratio - 1) <= 0.10,
                f"RSS {run.rss['loaded']:.0f} MiB loaded, {run.rss['warm']:.0f} after warm-up, "
                f"{run.rss['load']:.0f} after the load run, {run.rss['end']:.0f} after the burst: {ratio:.3f}x"))
    return out


# ---------------------------------------------------------------- the benchmark


def start_server(model: Path, log: Path, batch: int, queue: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "kotune.cli", "serve", str(model), "--port", str(port), "--threads", "1",
           "--max-batch-size", str(batch), "--max-queue", str(queue)]
    with log.open("w") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"kotune serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    sys.exit(f"kotune serve did not start:\n{log.read_text()[-3000:]}")


def build_model(out: Path) -> Path:
    """A tiny random LLaMA with the ko_chat template, like an SFT output (built in seconds, no downloads)."""
    from transformers import AutoTokenizer

    from kotune.data.templates import install_template
    from kotune.models.tiny import build_tiny_model

    build_tiny_model(out, arch="llama", vocab_size=2000)
    tok = AutoTokenizer.from_pretrained(out)
    install_template(tok, "ko_chat")
    tok.save_pretrained(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model to serve (default: build a tiny local one)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=100, help="requests of the warm-up run (same mix)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the load run; RSS after each shows whether "
                    "memory keeps growing (a leak) or levels off")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-queue", type=int, default=64)
    args = ap.parse_args()
    capacity = args.max_batch_size + args.max_queue
    if args.concurrency > capacity:
        sys.exit(f"--concurrency {args.concurrency} is above the batch plus the queue ({capacity}): 429s would "
                 "be expected in the load run")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else build_model(Path(tmp) / "load-model")
        log = Path(tmp) / "server.log"
        proc, url = start_server(model, log, args.max_batch_size, args.max_queue)
        try:
            run = measure(url, proc.pid, args.requests, args.concurrency, args.warmup, args.max_batch_size,
                          args.max_queue, args.rounds)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        server_log = log.read_text()
    load = run.load
    print(f"\nload run: {run.requests} requests at concurrency {args.concurrency} in {load.seconds:.1f} s "
          f"({run.requests / load.seconds:.1f} requests/s); statuses {dict(sorted(load.statuses.items()))}; "
          f"{load.disconnects} hung up mid-stream; cpus: {os.cpu_count()}")
    if args.rounds > 1:
        print("RSS (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in run.rss.items()))
    results = verdicts(run, server_log)
    for claim, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {claim}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
