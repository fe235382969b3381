"""Paths and small helpers the tests share. A module of its own (not `conftest`): several conftest.py files
exist, and `from conftest import ...` would pick whichever was imported first."""

import math
import shutil
import socket
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"


def make_chat_model(model_dir: Path, out: Path) -> Path:
    """A copy of a tiny model whose tokenizer carries the ko_chat template, like every `kotune sft` output."""
    from transformers import AutoTokenizer

    from kotune.data.templates import install_template

    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    install_template(tok, "ko_chat")
    tok.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait until `kotune serve` at `url` answers /health. Raises, with the tail of its output `log`, when `proc`
    exits first or `timeout` seconds pass."""
    import httpx2 as httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kotune serve exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"kotune serve did not answer /health within {timeout:.0f}s:\n{log_tail(log)}")


def stop(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM `proc`, and SIGKILL it when it has not exited `timeout` seconds later."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# Unit roundoff of float32 (half its machine epsilon): one rounding errs by at most this fraction of its result.
FP32_UNIT_ROUNDOFF = 2.0**-24


class LocalHTTPServer:
    """A real HTTP server on 127.0.0.1 (a free port) in a daemon thread, for scripted OpenAI-compatible endpoints;
    `with` starts and stops it."""

    def __init__(self, handler):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def single_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's spinning second
    thread made tests 5-20x slower. The thread count is restored on exit."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def summation_tolerance(magnitude: float, terms: int) -> float:
    """How far two float32 sums of `terms` same-sign terms, adding up to `magnitude` in absolute value, may differ
    when computed in different orders (different batching, padding, processes).

    torch sums with cascade (pairwise) summation, whose error is at most ceil(log2 terms) * u * sum|x| (Higham,
    Accuracy and Stability of Numerical Algorithms, 2nd ed., section 4.2); each term carries one more rounding of
    its own (+1). A difference of such sums (a DPO margin, a KL to an identical reference) is compared with the
    sum of the tolerances of its sums: the difference is small, its error is not.
    """
    return (math.ceil(math.log2(max(terms, 2))) + 1) * FP32_UNIT_ROUNDOFF * abs(magnitude)


# A sampled token's log-probability lies above -20 nats: a token of probability e^-20 (2e-9) is sampled about once in
# 500 million. Bounds the size of a sampled reply's summed log-probs.
SAMPLED_TOKEN_LOGPROB_BOUND = 20.0


def kl_at_reference_tolerance(row: dict, max_new_tokens: int) -> float:
    """How far from 0 a PPO metrics row's `kl` may be while the actor equals its reference: the KL is the difference
    of two summed log-probs of each reply (actor's and reference's, up to max_new_tokens terms each)."""
    return summation_tolerance(2 * row["response_length"] * SAMPLED_TOKEN_LOGPROB_BOUND, max_new_tokens)


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the event files in `folder`, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tensorboard_texts(folder) -> dict[str, str]:
    """tag -> the last text logged under it (TensorBoard's text plugin)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: events.Tensors(tag)[-1].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]}


def as_float32(rows, key):
    """TensorBoard stores scalars as float32: metrics.jsonl's values, rounded the same way, must match exactly."""
    return [(r["step"], struct.unpack("f", struct.pack("f", r[key]))[0]) for r in rows if r.get(key) is not None]


def conversational_pairs():
    """One multi-turn pair (system, an earlier exchange, the question) in each of the three chat layouts."""
    system, history, question = "친절하게 답하세요.", [("user", "안녕?"), ("assistant", "안녕하세요!")], "오늘 날씨 어때?"
    chosen, rejected = "맑고 따뜻해요.", "몰라."
    msgs = [{"role": "system", "content": system}, *({"role": r, "content": c} for r, c in history),
            {"role": "user", "content": question}]
    sharegpt = [{"from": {"user": "human", "assistant": "gpt"}[r], "value": c} for r, c in history]
    return [
        {"prompt": msgs, "chosen": [{"role": "assistant", "content": chosen}],
         "rejected": [{"role": "assistant", "content": rejected}]},  # TRL conversational
        {"chosen": [*msgs, {"role": "assistant", "content": chosen}],
         "rejected": [*msgs, {"role": "assistant", "content": rejected}]},  # TRL implicit prompt
        {"system": system, "conversations": [*sharegpt, {"from": "human", "value": question}],
         "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected}},  # LLaMA-Factory
    ]
