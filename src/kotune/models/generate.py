"""The one generation engine behind `kotune chat`, `kotune serve` and generation eval.

A background thread owns the model and runs a dynamic batch loop: all active requests are rows of one batched
decode step over a shared KV cache; requests that arrive meanwhile are prefilled and join between steps (rows
are left-padded so caches line up; finished rows leave at once). Each request has its own sampling parameters,
seed, stop strings and token budget, streams UTF-8-safe text to a callback as it is produced, and can be
cancelled.

Why our own compact loop and not transformers' continuous batching (`generate_batch`,
`init_continuous_batching`, 5.23): it runs on CPU, but drops `repetition_penalty` ("isn't supported by CB"),
has one random generator for all requests (no per-request `seed`), fixes sampling vs greedy per manager, and
took ~13 s for two 20-token requests on our tiny models (its paged cache is sized for GPUs). `model.generate`
with a streamer serves one request at a time. This loop needs only the model's forward and `DynamicCache`, so it
batches any causal LM whose cache layers are full attention; others (sliding window, linear attention) are
served one request at a time, with a warning.

On a GPU a decode step reads back from the device once: the new tokens (`_after_step`), which the host needs to
stream text. Everything else a step decides on the host is decided from the requests' Python-side parameters, the
per-row sampling settings live on the device with the batch, and each request's random generator lives on the
model's device, so no step waits on a host-to-device copy either.
"""

from __future__ import annotations

import collections
import inspect
import logging
import queue
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from kotune.common.device import resolve_device, resolve_precision
from kotune.models.text_stream import TextStream

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded."""

    max_new_tokens: int = 256
    """Most tokens to generate (the reply may end earlier at EOS or a stop string)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: sample from the smallest set of tokens whose probability reaches top_p (1 = off)."""
    top_k: int = 0
    """Sample from the k most likely tokens (0 = off)."""
    repetition_penalty: float = 1.0
    """>1 discourages tokens already in the prompt or reply (CTRL-style, as in transformers); 1 = off."""
    stop: tuple[str, ...] = ()
    """Strings that end the reply; the stop string itself is not returned."""
    seed: int | None = None
    """Seed of this request's own random generator: same seed, same prompt, same reply."""
    ignore_eos: bool = False
    """Keep generating past EOS until max_new_tokens (benchmarks)."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        for ok, message in [
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.temperature >= 0, "temperature must be >= 0 (0 = greedy)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0 (1 = off)"),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings"),
        ]:
            if not ok:
                raise ValueError(f"sampling: {message}")


@dataclass
class Output:
    """One event for a request: new text while streaming; the last one has `finish_reason` set.

    `finish_reason`: stop (EOS or a stop string) | length (max_new_tokens or the model's context) |
    cancelled | error (then `error` says why). Token counts are totals so far.
    """

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class EngineBusy(RuntimeError):
    """The waiting queue is full; the caller should retry later (HTTP 429)."""


@dataclass(eq=False)
class _Request:
    id: str
    prompt: list[int]
    params: SamplingParams
    sink: Callable[[Output], None]
    stream: TextStream
    generator: torch.Generator
    completion_tokens: int = 0
    cancelled: bool = False


class RequestHandle:
    """What `Engine.submit` returns: the request id and a way to cancel it."""

    def __init__(self, engine: Engine, request: _Request):
        self._engine, self._request, self.id = engine, request, request.id

    def cancel(self) -> None:
        """Stop generating for this request (takes effect before the next decode step)."""
        self._request.cancelled = True
        with self._engine._cv:  # wake the loop if it sleeps
            self._engine._cv.notify_all()


@dataclass
class _Batch:
    """The rows being decoded together (engine thread only)."""

    rows: list[_Request] = field(default_factory=list)
    cache: object = None  # DynamicCache, [B, heads, L, dim] per layer
    mask: torch.Tensor | None = None  # [B, L] attention mask over the cache (0 = left padding)
    pending: torch.Tensor | None = None  # [B] last sampled token of each row, not yet in the cache
    seen: torch.Tensor | None = None  # [B, V] tokens in each row's prompt + reply (repetition penalty)
    knobs: torch.Tensor | None = None  # [B, 4] each row's repetition_penalty, temperature, top_k (0: off), top_p


class Engine:
    """Owns a model and tokenizer; decodes all submitted requests together in a background thread.

    Args:
        model: a causal LM (a PEFT model is merged into its base for serving).
        tokenizer: its tokenizer; without a chat_template, kotune's `ko_chat` template is used.
        max_batch_size: most requests decoded together; more wait in the queue.
        max_waiting: most requests waiting to join; `submit` raises EngineBusy beyond it.
        max_prefill_tokens: most prompt tokens prefilled in one step (a long prompt still goes alone).
        max_context: most prompt + reply tokens per request (default: the model's max_position_embeddings).
        threads: torch CPU threads of the engine thread (default: torch's). Small models, and CPUs shared with
            other work, decode much faster with 1-2: idle OpenMP threads spin and fight for cores.
    """

    def __init__(self, model, tokenizer, *, max_batch_size: int = 16, max_waiting: int = 64,
                 max_prefill_tokens: int = 4096, max_context: int | None = None, threads: int | None = None):
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        if hasattr(model, "merge_and_unload"):  # PEFT: one merged weight per layer decodes faster, same outputs
            model = model.merge_and_unload()
        self.model, self.tokenizer = model.eval(), tokenizer
        self.template_note = _ensure_chat_template(tokenizer)
        self.device = next(model.parameters()).device
        config = model.config.get_text_config()
        self.max_context = max_context or getattr(config, "max_position_embeddings", None) or 2048
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        layers = DynamicCache(config=model.config).layers
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            log.warning("%s has cache layers other than full attention; serving one request at a time",
                        config.model_type)
            max_batch_size = 1
        self.max_batch_size, self.max_waiting = max_batch_size, max_waiting
        self.max_prefill_tokens, self.threads = max_prefill_tokens, threads
        self.eos_ids = _eos_ids(model, tokenizer)
        # only the last position's logits are needed: skips a [batch, prompt, vocab] tensor at prefill
        keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if keep else {}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_ids or [0])[0]
        self._waiting: collections.deque[_Request] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._batch = _Batch()
        # keys fixed up front: other threads copy this dict while the engine thread updates it
        self._counts = dict.fromkeys(("completed", "cancelled", "failed", "generated_tokens"), 0)
        self._thread = threading.Thread(target=self._run, name="kotune-engine", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, path: str, *, dtype: str = "auto", device: str | None = None, trust_remote_code: bool = False,
             **kwargs) -> Engine:
        """An engine for a model folder, hub id or LoRA adapter folder (see `Engine` for kwargs)."""
        from kotune.models.load import load_model, load_tokenizer

        device = resolve_device(device)
        dtype = resolve_precision(dtype, device)
        model = load_model(path, dtype=dtype, trust_remote_code=trust_remote_code, attn_implementation="sdpa",
                           device=device)
        return cls(model, load_tokenizer(path, trust_remote_code=trust_remote_code), **kwargs)

    # ------------------------------------------------------------------ requests (any thread)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Prompt ids of `messages` rendered with the tokenizer's chat template, ready for the reply."""
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)
        return list(enc["input_ids"])

    def encode_text(self, text: str) -> list[int]:
        """Prompt ids of a raw text prompt (with the tokenizer's own BOS, if it adds one)."""
        return list(self.tokenizer(text)["input_ids"])

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Callable[[Output], None], *,
               block: bool = False) -> RequestHandle:
        """Queue a request; `sink` gets its Outputs from the engine thread (it must not block).

        Raises:
            EngineBusy: the waiting queue is full and `block` is False.
            ValueError: empty prompt, or prompt + max_new_tokens longer than the model's context.
        """
        if not prompt_ids:
            raise ValueError("prompt is empty")
        if len(prompt_ids) + params.max_new_tokens > self.max_context:
            raise ValueError(f"this model's maximum context length is {self.max_context} tokens; the prompt has "
                             f"{len(prompt_ids)} and {params.max_new_tokens} more were asked for: shorten the "
                             "prompt or ask for fewer tokens")
        # On the model's device: drawing a row's random number then needs no copy to the device.
        gen = torch.Generator(device=self.device)
        gen.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
        req = _Request(uuid.uuid4().hex, list(prompt_ids), params, sink,
                       TextStream(self.tokenizer, params.stop, prompt_ids), gen)
        with self._cv:
            while len(self._waiting) >= self.max_waiting and not self._closed:
                if not block:
                    raise EngineBusy(f"{len(self._waiting)} requests are already waiting; retry later")
                self._cv.wait()
            if self._closed:
                raise RuntimeError("engine is closed")
            self._waiting.append(req)
            self._cv.notify_all()
        return RequestHandle(self, req)

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[Output]:
        """Outputs of one request as they are produced; closing the iterator early cancels the request."""
        q: queue.Queue[Output] = queue.Queue()
        handle = self.submit(prompt_ids, params, q.put, block=True)
        try:
            while True:
                out = q.get()
                yield out
                if out.finished:
                    return
        finally:
            handle.cancel()

    def complete(self, prompt_ids: list[int], params: SamplingParams) -> Output:
        """The whole reply of one request (blocking)."""
        return self.complete_many([prompt_ids], params)[0]

    def complete_many(self, prompts: list[list[int]], params: SamplingParams) -> list[Output]:
        """Whole replies of many prompts, decoded together (blocking); results in prompt order."""
        done: queue.Queue[tuple[int, Output]] = queue.Queue()
        texts: list[list[str]] = [[] for _ in prompts]
        results: list[Output | None] = [None] * len(prompts)
        handles = []
        try:
            for i, ids in enumerate(prompts):
                handles.append(self.submit(ids, params, lambda out, i=i: done.put((i, out)), block=True))
            remaining = len(prompts)
            while remaining:
                i, out = done.get()
                texts[i].append(out.text)
                if out.finished:
                    results[i] = Output("".join(texts[i]), out.finish_reason, out.prompt_tokens,
                                        out.completion_tokens, out.error)
                    remaining -= 1
        finally:  # interrupted (Ctrl-C): do not leave the rest decoding
            for h in handles:
                h.cancel()
        return results  # type: ignore[return-value]

    def stats(self) -> dict:
        """Requests running and waiting now, and totals since start."""
        return {"running": len(self._batch.rows), "waiting": len(self._waiting), **self._counts}

    def close(self) -> None:
        """Stop the loop; waiting and running requests end with an error."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ the loop (engine thread)

    def _run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)  # OpenMP settings are per thread: set them where the model runs
        with torch.inference_mode():  # thread-local, like the model calls it covers
            self._loop()
        waiting = list(self._waiting)
        self._finish([(r, "error") for r in self._batch.rows + waiting], "the server is shutting down")

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._waiting and not self._batch.rows:
                    self._cv.wait()
                if self._closed:
                    break
                dropped = self._drop_cancelled()
                new = self._admit()
            try:
                self._finish([(r, "cancelled") for r in self._batch.rows + dropped if r.cancelled])
                if new:
                    self._prefill(new)
                elif self._batch.rows:
                    self._decode()
            except Exception as e:  # a bad step must not kill the server: fail its requests, keep serving
                log.exception("generation step failed")
                failed = self._batch.rows + [r for r in new if r not in self._batch.rows]
                self._finish([(r, "error") for r in failed], f"generation failed: {e}")
                self._batch = _Batch()

    def _drop_cancelled(self) -> list[_Request]:
        """Take cancelled requests out of the waiting queue now (lock held): a client that gave up while
        waiting must free its place at once, not when a batch slot opens, or live clients get 429."""
        dropped = [r for r in self._waiting if r.cancelled]
        if dropped:
            self._waiting = collections.deque(r for r in self._waiting if not r.cancelled)
            self._cv.notify_all()  # room in the queue for blocked submitters
        return dropped

    def _admit(self) -> list[_Request]:
        """Waiting requests that fit the batch and this step's prefill budget (called with the lock held)."""
        new: list[_Request] = []
        longest = 0
        while self._waiting and len(self._batch.rows) + len(new) < self.max_batch_size:
            req = self._waiting[0]
            longest = max(longest, len(req.prompt))
            if new and longest * (len(new) + 1) > self.max_prefill_tokens:
                break
            self._waiting.popleft()
            if req.cancelled:
                self._finish([(req, "cancelled")])
            else:
                new.append(req)
        if new:
            self._cv.notify_all()  # room in the queue for blocked submitters
        return new

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, cache) -> tuple[torch.Tensor, object]:
        """Logits of the last position of every row ([B, V], fp32) and the grown cache."""
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                         **self._last_logits_only)
        return out.logits[:, -1, :].float(), out.cache

    def _prefill(self, new: list[_Request]) -> None:
        """Run the prompts of `new` (left-padded together), sample their first tokens and join the batch."""
        from transformers import DynamicCache

        width = max(len(r.prompt) for r in new)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, r in enumerate(new):
            ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt)
            mask[i, width - len(r.prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits, cache = self._forward(ids, mask, DynamicCache(config=self.model.config))
        seen = torch.zeros((len(new), self.vocab_size), dtype=torch.bool, device=self.device)
        for i, r in enumerate(new):
            seen[i, torch.tensor(r.prompt, device=self.device)] = True
        knobs = torch.tensor([[r.params.repetition_penalty, r.params.temperature, r.params.top_k, r.params.top_p]
                              for r in new], device=self.device)
        part = _Batch(list(new), cache, mask, None, seen, knobs)
        part.pending = self._sample(logits, part)
        first = len(self._batch.rows)
        self._merge(part)
        self._after_step(first)

    def _decode(self) -> None:
        b = self._batch
        b.mask = torch.cat([b.mask, b.mask.new_ones((len(b.rows), 1))], dim=1)
        logits, b.cache = self._forward(b.pending.unsqueeze(1), b.mask, b.cache)
        b.pending = self._sample(logits, b)
        self._after_step(0)

    def _sample(self, logits: torch.Tensor, b: _Batch) -> torch.Tensor:
        """Next token of every row with that row's own penalty, temperature, top-k, top-p and generator.

        What to skip is decided from the requests' parameters on the host, never by reading a device tensor."""
        params = [r.params for r in b.rows]
        dev = logits.device
        penalty, temperature, top_k, top_p = b.knobs.unbind(1)
        if any(p.repetition_penalty != 1 for p in params):
            penalty = penalty.unsqueeze(1)
            logits = torch.where(b.seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
        greedy = logits.argmax(-1)
        if all(p.temperature == 0 for p in params):
            return greedy
        vocab = logits.shape[-1]
        top_k = top_k.masked_fill(top_k == 0, vocab).unsqueeze(1)
        top_p = top_p.unsqueeze(1)
        scale = temperature.masked_fill(temperature == 0, 1.0).unsqueeze(1)  # greedy rows take `greedy` below
        sorted_logits, order = (logits / scale).sort(dim=-1, descending=True)
        drop = torch.arange(vocab, device=dev).unsqueeze(0) >= top_k
        probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(-1)
        drop |= ((probs.cumsum(-1) - probs) >= top_p) & (top_p < 1)  # keep the head whose mass reaches top_p
        cdf = probs.masked_fill(drop, 0).cumsum(-1)
        u = torch.cat([torch.rand(1, generator=r.generator, device=dev) for r in b.rows]) * cdf[:, -1]
        choice = torch.searchsorted(cdf, u.unsqueeze(1), right=True).clamp(max=vocab - 1)
        sampled = order.gather(1, choice).squeeze(1)
        return torch.where(temperature == 0, greedy, sampled)

    def _after_step(self, first: int) -> None:
        """Record the tokens just sampled for rows `first`.., stream their text, remove the rows that finished."""
        b = self._batch
        b.seen[torch.arange(len(b.rows), device=self.device), b.pending] = True
        new_tokens = zip(b.rows[first:], b.pending[first:].tolist(), strict=True)
        reasons = [(r, self._advance(r, token)) for r, token in new_tokens]
        self._finish([(r, why) for r, why in reasons if why])

    def _advance(self, r: _Request, token: int) -> str | None:
        """Add one token to request `r`; send its new text; return a finish reason when it is done."""
        if token in self.eos_ids and not r.params.ignore_eos:
            return "stop"
        r.completion_tokens += 1
        self._counts["generated_tokens"] += 1
        text = r.stream.push(token)
        if text:
            _deliver(r, Output(text, None, len(r.prompt), r.completion_tokens))
        if r.stream.stopped:
            return "stop"
        if r.completion_tokens >= r.params.max_new_tokens or len(r.prompt) + r.completion_tokens >= self.max_context:
            return "length"
        return None

    def _merge(self, part: _Batch) -> None:
        """Add freshly prefilled rows to the batch, left-padding whichever cache is shorter."""
        b = self._batch
        if not b.rows:
            self._batch = part
            return
        width = max(b.mask.shape[1], part.mask.shape[1])
        for mine, theirs in zip(b.cache.layers, part.cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)])
            mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)])
        b.mask = torch.cat([_pad_left(b.mask, width, 1), _pad_left(part.mask, width, 1)])
        b.rows += part.rows
        b.pending = torch.cat([b.pending, part.pending])
        b.seen = torch.cat([b.seen, part.seen])
        b.knobs = torch.cat([b.knobs, part.knobs])

    def _finish(self, done: list[tuple[_Request, str]], error: str | None = None) -> None:
        """Send each request's last Output (with the rest of its text) and take it out of the batch."""
        for r, why in done:
            self._counts[{"stop": "completed", "length": "completed", "error": "failed"}.get(why, why)] += 1
            rest = r.stream.finish() if why in ("stop", "length") else ""
            _deliver(r, Output(rest, why, len(r.prompt), r.completion_tokens, error if why == "error" else None))
        gone = {id(r) for r, _ in done}
        b = self._batch
        keep = [i for i, r in enumerate(b.rows) if id(r) not in gone]
        if len(keep) == len(b.rows):
            return
        if not keep:
            self._batch = _Batch()
            return
        index = torch.tensor(keep, device=self.device)
        start = int(b.mask[index].any(0).nonzero()[0])  # columns that are padding in every remaining row
        for layer in b.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]
        b.rows = [b.rows[i] for i in keep]
        b.mask, b.pending, b.seen, b.knobs = b.mask[index, start:], b.pending[index], b.seen[index], b.knobs[index]


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    return F.pad(t, [0, 0] * (t.dim() - 1 - dim) + [missing, 0]) if missing else t


def _deliver(r: _Request, out: Output) -> None:
    try:
        r.sink(out)
    except Exception:  # a consumer that went away (closed event loop) must not stop the other requests
        log.warning("dropping request %s: its consumer failed", r.id, exc_info=True)
        r.cancelled = True


def _eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    return sorted({*ids, tokenizer.eos_token_id} - {None})


def _ensure_chat_template(tokenizer) -> str | None:
    """Use the model's own chat template (saved at training); fall back to `ko_chat` and say so."""
    if getattr(tokenizer, "chat_template", None):
        return None
    from kotune.data.templates import install_template

    install_template(tokenizer, "ko_chat")
    note = ("the tokenizer has no chat_template, so prompts use kotune's `ko_chat` template; "
            "models fine-tuned with kotune carry the template they were trained with")
    log.warning(note)
    return note
