"""A client of any OpenAI-compatible endpoint (OpenAI, vLLM, `kotune serve`), asked through the `openai` client:
self-instruct's teacher and the judge (and endpoint contestants) of `kotune eval judge`.

The client's own retries are turned off so that this module decides, counts and logs them: a timeout, a
connection error, HTTP 408/409/429/5xx or a reply without text is retried after `backoff_s · 2^attempt`
(halved at random, so that clients that failed together do not retry together; at most `max_backoff_s`), or
after the server's `Retry-After`. Any other HTTP error (wrong URL, model or key) stops the run at once: retrying
cannot fix it.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from typing import Literal, Protocol

from kotune.common.options import opt


@dataclass(kw_only=True)
class EndpointRetries:
    """How a client of an OpenAI-compatible endpoint paces and retries its requests: the same recipe keys, flat, in
    every config that asks one (selfinstruct's `teacher`, the judge's). Subclasses call `super().__post_init__()`."""

    concurrency: int = opt(4, "requests in flight at once, per endpoint")
    timeout_s: float = opt(300.0, "seconds to wait for one reply before retrying")
    max_retries: int = opt(5, "retries of one request after a timeout, connection error, 429, 5xx or unreadable reply")
    backoff_s: float = opt(1.0, "first retry delay; doubled each retry (with jitter), or the server's Retry-After")
    max_backoff_s: float = opt(60.0, "longest delay between retries")

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency: must be at least 1, got {self.concurrency}")
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < self.backoff_s or self.timeout_s <= 0:
            raise ValueError("max_retries and backoff_s must be >= 0, max_backoff_s >= backoff_s, timeout_s > 0")


class EndpointSettings(Protocol):
    """What the client reads from its config (selfinstruct's `TeacherConfig`, the judge's endpoints)."""

    base_url: str
    model: str
    api_key_env: str | None
    api: Literal["chat", "completions"]
    temperature: float
    top_p: float
    max_tokens: int
    timeout_s: float
    max_retries: int
    backoff_s: float
    max_backoff_s: float


class EndpointError(ValueError):
    """The endpoint cannot be used: the message names the URL, the status and what the server said.

    A ValueError, like kotune's other errors the user fixes in the recipe (URL, model, key), so the CLI prints the
    message instead of a traceback.
    """


class RetriesExhausted(EndpointError):
    """One request failed `max_retries + 1` times; the run may go on with other requests."""


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None
    retries: int


_RETRY_STATUS = {408, 409, 429}


def api_key(cfg: EndpointSettings, where: str = "api_key_env") -> str | None:
    """The key from the environment variable the recipe names (None when it names none).

    Raises:
        ValueError: naming the variable when it is not set.
    """
    if not cfg.api_key_env:
        return None
    key = os.environ.get(cfg.api_key_env, "").strip()
    if not key:
        raise ValueError(f"{where}: the environment variable {cfg.api_key_env} is not set; export it, "
                         f"or set {where}: null for a server that needs no key")
    return key


class Client:
    """`await client.complete(prompt)` returns the endpoint's `Reply`, retrying what can be retried."""

    def __init__(self, cfg: EndpointSettings, *, stop: list[str] | None = None, rng: random.Random | None = None,
                 key_field: str = "api_key_env"):
        from openai import AsyncOpenAI

        self.cfg = cfg
        self.stop = stop
        self.rng = rng or random.Random()
        # The openai client insists on a key; a local server without one ignores the header.
        self.client = AsyncOpenAI(base_url=cfg.base_url, api_key=api_key(cfg, key_field) or "no-key", max_retries=0,
                                  timeout=cfg.timeout_s)
        self.retries = 0

    async def close(self) -> None:
        await self.client.close()

    async def _once(self, prompt: str | list[dict]) -> tuple[str, str | None]:
        cfg = self.cfg
        common = dict(model=cfg.model, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
        if cfg.api == "chat":
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            resp = await self.client.chat.completions.create(messages=messages, **common)
            choice = resp.choices[0]
            return choice.message.content, choice.finish_reason
        choice = (await self.client.completions.create(prompt=prompt, stop=self.stop, **common)).choices[0]
        return choice.text, choice.finish_reason

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        try:
            if retry_after is not None:
                return min(self.cfg.max_backoff_s, max(0.0, float(retry_after)))
        except ValueError:
            pass  # an HTTP date instead of seconds: use our own schedule
        full = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2**attempt)
        return full * (0.5 + self.rng.random() / 2)

    async def complete(self, prompt: str | list[dict]) -> Reply:
        """The reply to `prompt`: a string (one user message, or the text a completions model continues) or a
        list of chat messages.

        Raises:
            RetriesExhausted: the request failed on every try.
            EndpointError: the server rejected the request in a way retrying cannot fix.
        """
        import openai

        url = self.cfg.base_url.rstrip("/") + ("/chat/completions" if self.cfg.api == "chat" else "/completions")
        for attempt in range(self.cfg.max_retries + 1):
            retry_after = None
            try:
                text, finish = await self._once(prompt)
                if not isinstance(text, str):
                    raise TypeError("no text in the reply")
                return Reply(text, finish, attempt)
            except openai.APIStatusError as e:
                status = e.status_code
                if status not in _RETRY_STATUS and status < 500:
                    raise EndpointError(f"{url}: HTTP {status} for model {self.cfg.model!r}: {e.message}") from None
                retry_after = e.response.headers.get("retry-after")
                why = f"HTTP {status}"
            except (openai.APIConnectionError, openai.APIResponseValidationError) as e:
                why = type(e).__name__  # includes timeouts
            except (AttributeError, IndexError, TypeError, ValueError) as e:
                why = f"unreadable reply ({e})"  # a 200 whose body is not a completion
            if attempt == self.cfg.max_retries:
                raise RetriesExhausted(f"{url}: {why} on all {attempt + 1} tries")
            self.retries += 1
            await asyncio.sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable")
