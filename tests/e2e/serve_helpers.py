"""Helpers for the serving end-to-end tests: a chat-ready tiny model and a real `kotune serve` process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

from kotune_test_paths import free_port, make_chat_model, stop, wait_ready  # noqa: F401  (make_chat_model: re-exported)


@dataclass
class Server:
    url: str
    port: int
    model: str
    proc: subprocess.Popen
    log: Path

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()


@contextlib.contextmanager
def serve(model_dir: Path, log: Path, *args: str, timeout: float = 180) -> Iterator[Server]:
    """Run `python -m kotune.cli serve MODEL --port P ARGS...` until the block ends; yields once /health answers."""
    port = free_port()
    # one decoding thread: tiny models gain nothing from more, and on a shared CI machine idle OpenMP threads
    # spinning against other jobs make every token ~50x slower
    cmd = [sys.executable, "-m", "kotune.cli", "serve", str(model_dir), "--port", str(port), "--threads", "1", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", port, Path(model_dir).name, proc, log)
    try:
        wait_ready(server.url, proc, log, timeout)
        yield server
    finally:
        stop(proc, timeout=15)


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a socket listening on `port`, read from /proc/net/tcp{,6} (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                    found.add(_address(address))
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)
