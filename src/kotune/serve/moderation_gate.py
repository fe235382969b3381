"""The server's side of moderation: every check on the user texts of a request, off the event loop, with a
deadline; one decision per request; counts for /health and one log line per flagged request.

A check that fails or runs past its deadline is a decision, not a crash: `--moderation-on-error block` refuses
the request as flagged (category `moderation_error`), `allow` lets it through; both are counted and logged, and
the server goes on serving. A check that overruns keeps its worker thread until it returns, but the request does
not wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from kotune.serve.config import ServeConfig
from kotune.serve.moderation import OpenAICheck, Verdict

log = logging.getLogger("kotune.serve.moderation")
ERROR_CATEGORY = "moderation_error"


@dataclass
class Decision:
    """The request's fate: flagged (refused) or not, and why."""

    flagged: bool
    categories: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class ModerationCounters:
    checked: int = 0
    """Requests whose user messages were checked."""
    flagged: int = 0
    """Requests refused: flagged by a check, or blocked because a check failed."""
    errors: int = 0
    """Requests where a check failed or timed out (then blocked or allowed, as --moderation-on-error says)."""
    allowed_on_error: int = 0
    categories: Counter = field(default_factory=Counter)
    """Refused requests by category (a request flagged for two categories counts in both)."""

    def as_dict(self) -> dict:
        return {**self.__dict__, "categories": dict(self.categories)}


class Gate:
    """Runs `checks` on the user texts of each request and decides (event loop only)."""

    def __init__(self, checks: list, cfg: ServeConfig):
        self.checks, self.cfg = checks, cfg
        self.counters = ModerationCounters()

    def _deadline(self, check) -> float:
        """How long the request waits for `check`: one timeout, or as many as the client's tries may take
        (with its backoff between them, at most 8 s each)."""
        if isinstance(check, OpenAICheck):
            return self.cfg.moderation_timeout * (self.cfg.moderation_retries + 1) + 8.0 * self.cfg.moderation_retries
        return self.cfg.moderation_timeout

    async def _run(self, check, texts: list[str]) -> list[Verdict] | str:
        try:
            return await asyncio.wait_for(run_in_threadpool(check.check, texts), self._deadline(check))
        except asyncio.TimeoutError:
            return f"{check.name}: no answer within {self._deadline(check):.1f}s"
        except Exception as e:  # noqa: BLE001 - any failure of a check is an on-error decision, never a crash
            return f"{check.name}: {type(e).__name__}: {e}"

    async def decide(self, texts: list[str], where: str) -> Decision:
        """Check `texts` (a request's user messages) with every check at once; log and count the outcome."""
        if not self.checks or not texts:
            return Decision(False)
        results = await asyncio.gather(*(self._run(c, texts) for c in self.checks))
        errors = [r for r in results if isinstance(r, str)]
        categories = list(dict.fromkeys(c for r in results if not isinstance(r, str) for v in r
                                        for c in v.flagged_categories))
        flagged = any(v.flagged for r in results if not isinstance(r, str) for v in r)
        if flagged and not categories:
            categories = ["flagged"]  # an endpoint may flag without naming a category
        counters = self.counters
        counters.checked += 1
        failed = f"; checks failed: {'; '.join(errors)}" if errors else ""
        if errors:
            counters.errors += 1
            if not flagged and self.cfg.moderation_on_error == "block":
                flagged, categories = True, [ERROR_CATEGORY]
            elif not flagged:
                counters.allowed_on_error += 1
                log.warning("moderation allowed %s unchecked (--moderation-on-error allow)%s", where, failed)
        if flagged:  # one line per refused request; the user's text only when asked for
            counters.flagged += 1
            counters.categories.update(categories)
            text = f": {texts!r}" if self.cfg.log_flagged_text else ""
            log.warning("moderation flagged %s (%s)%s%s", where, ", ".join(categories), failed, text)
        return Decision(flagged, categories, errors)

    async def moderate(self, texts: list[str]) -> list[Verdict]:
        """The local checks' merged verdict per text, for `/v1/moderations` (a failure raises)."""
        local = [c for c in self.checks if not isinstance(c, OpenAICheck)]
        per_check = await asyncio.gather(*(asyncio.wait_for(run_in_threadpool(c.check, texts), self._deadline(c))
                                           for c in local))
        merged = []
        for verdicts in zip(*per_check):
            categories: dict[str, bool] = {}
            scores: dict[str, float] = {}
            for v in verdicts:
                for c, hit in v.categories.items():
                    categories[c] = categories.get(c, False) or hit
                for c, s in v.scores.items():
                    scores[c] = max(scores.get(c, 0.0), s)
            merged.append(Verdict(any(v.flagged for v in verdicts), categories, scores))
        return merged

    @property
    def serves_moderations(self) -> bool:
        """kotune answers /v1/moderations itself when it has a local check (not when it would only relay)."""
        return any(not isinstance(c, OpenAICheck) for c in self.checks)
