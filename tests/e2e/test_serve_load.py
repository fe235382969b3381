"""`kotune serve` under load with clients hanging up mid-stream: the small version of `benchmarks/serve_load.py`
(100 requests at concurrency 16, a quarter of them streams closed after their first event or two, then a burst
past the batch and queue), judged by the same verdicts."""

from __future__ import annotations

import sys

import pytest
from serve_helpers import make_chat_model, serve

from kotune_test_paths import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import serve_load  # noqa: E402

pytestmark = pytest.mark.slow


def test_100_requests_at_concurrency_16_with_a_quarter_hanging_up(tiny_llama, tmp_path):
    model = make_chat_model(tiny_llama, tmp_path / "tiny-chat")
    # the batch plus the queue (32) leave room above the 16 clients for hung-up requests not yet noticed
    batch, queue = 8, 24
    with serve(model, tmp_path / "server.log", "--max-batch-size", str(batch), "--max-queue", str(queue)) as server:
        run = serve_load.measure(server.url, server.proc.pid, requests=100, concurrency=16, warmup=32, batch=batch,
                                 queue=queue)
    assert run.load.disconnects == 25 and sum(run.load.statuses.values()) == 100
    # the memory verdict compares whole-process RSS (~0.4 GB, mostly torch) after a warm-up run and after the
    # load: about 1% apart in our runs, so the 10% bound is robust, and loose: it fails only past ~0.4 MB leaked
    # per request (a tiny model's request holds kilobytes); `serve_load.py --rounds N` shows the trend
    failed = [f"{claim}: {detail}" for claim, ok, detail in serve_load.verdicts(run, server.log.read_text()) if not ok]
    assert failed == [], "\n".join(failed)
