"""The checks behind `kotune serve --moderation SPEC`: each takes user texts and says, per text, whether it is
flagged and for which categories. All are blocking calls; `moderation_gate` runs them off the event loop.

- `openai`: any endpoint speaking OpenAI's `/v1/moderations`, through the official client (its own timeout and
  retries on timeouts, connection errors, 429 and 5xx).
- `words:FILE`: a list of words and regular expressions (see `WordsCheck` for the file's format).
- `model:PATH`: a local Hugging Face text-classification model; the labels that flag and a threshold decide.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kotune.common.terms import TermMatcher
from kotune.serve.config import ServeConfig


@dataclass(frozen=True)
class Verdict:
    """What one check says of one text, in the terms of OpenAI's moderation result."""

    flagged: bool
    categories: dict[str, bool] = field(default_factory=dict)
    """Every category the check knows, True where the text is flagged for it."""
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def flagged_categories(self) -> list[str]:
        return [c for c, hit in self.categories.items() if hit]


class WordsCheck:
    """`words:FILE`: one entry a line, UTF-8. Blank lines and lines starting with `#` are skipped.

        [hate]          the category of the entries below (before any: `words`)
        바보            a term: Hangul matches inside words (바보야), English as a whole word (idiots, not idiotic)
        re:씨\\s*발      a regular expression, searched case-insensitively in the NFKC-normalised text
        !바보상자        an exception: a word holding a term that is allowed (blanked out before matching)

    Raises:
        ValueError: an unreadable regular expression or an empty list, with the file and line.
    """

    def __init__(self, path: str | Path):
        self.name = f"words:{path}"
        terms: dict[str, list[str]] = {}
        patterns: dict[str, list[re.Pattern]] = {}
        exceptions: list[str] = []
        category = "words"
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"moderation words:{path}: cannot read it ({e}); give a UTF-8 text file") from None
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                category = line[1:-1].strip() or "words"
            elif line.startswith("!"):
                exceptions.append(line[1:])
            elif line.startswith("re:"):
                try:
                    pattern = re.compile(line[3:], re.IGNORECASE)  # as written: casefolding would turn \S into \s
                except re.error as e:
                    raise ValueError(f"{path}:{number}: {line[3:]!r} is not a regular expression ({e}); fix it, or "
                                     "write the word without `re:`") from None
                patterns.setdefault(category, []).append(pattern)
            else:
                terms.setdefault(category, []).append(line)
        self.categories = list(dict.fromkeys([*terms, *patterns]))
        if not self.categories:
            raise ValueError(f"moderation words:{path}: no words or patterns in it; one a line (see `kotune serve "
                             "--help`)")
        # exceptions are blanked once per text (by `_blank`), then every category looks at the same prepared text
        self._matchers = {c: TermMatcher(terms.get(c, ()), (), patterns.get(c, ())) for c in self.categories}
        self._blank = TermMatcher((), exceptions)

    def check(self, texts: list[str]) -> list[Verdict]:
        verdicts = []
        for text in texts:
            prepared = self._blank.prepare(text)
            hits = {c: m.find_normalized(prepared) is not None for c, m in self._matchers.items()}
            verdicts.append(Verdict(any(hits.values()), hits, {c: float(hit) for c, hit in hits.items()}))
        return verdicts


class ModelCheck:
    """`model:PATH`: a text-classification model; a text is flagged when a flagging label scores >= threshold.

    Flagging labels default to every label but id 0, which classifiers conventionally give the harmless class
    (none, clean, 0).
    """

    def __init__(self, path: str, labels: list[str], threshold: float, device: str | None = None,
                 trust_remote_code: bool = False):
        from transformers import pipeline

        self.name = f"model:{path}"
        # on --device when given; else the CPU: a classifier is small next to the model being served
        self._pipe = pipeline("text-classification", model=path, device=device or "cpu",
                              trust_remote_code=trust_remote_code)
        known = [self._pipe.model.config.id2label[i] for i in sorted(self._pipe.model.config.id2label)]
        unknown = sorted(set(labels) - set(known))
        if unknown:
            raise ValueError(f"moderation model:{path}: labels {unknown} are not the model's; it has {known}: fix "
                             "--moderation-labels")
        self.categories = labels or known[1:]
        if not self.categories:
            raise ValueError(f"moderation model:{path}: it has the one label {known}; it cannot flag anything")
        self.threshold = threshold
        self._lock = threading.Lock()  # a fast tokenizer used from two threads at once raises "Already borrowed"

    def check(self, texts: list[str]) -> list[Verdict]:
        # truncation: a long message is judged on its start rather than crashing the model's position table
        with self._lock:
            results = self._pipe(texts, top_k=None, truncation=True)
        verdicts = []
        for scores in results:
            by_label = {s["label"]: float(s["score"]) for s in scores}
            hits = {c: by_label.get(c, 0.0) >= self.threshold for c in self.categories}
            verdicts.append(Verdict(any(hits.values()), hits, by_label))
        return verdicts


class OpenAICheck:
    """`openai`: `moderations.create` on `base_url` with the key from the environment variable `key_env`."""

    def __init__(self, base_url: str, key_env: str, model: str, timeout: float, retries: int):
        import openai

        key = os.environ.get(key_env)
        if not key:
            raise ValueError(f"moderation openai: ${key_env} is not set; export the moderation API's key in it, or "
                             "name another variable with --moderation-api-key-env")
        self.name = f"openai:{base_url}"
        self.categories: list[str] = []  # whatever the endpoint reports
        self._client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=retries)
        self._model = model

    def check(self, texts: list[str]) -> list[Verdict]:
        response = self._client.moderations.create(model=self._model, input=texts)
        if len(response.results) != len(texts):
            raise RuntimeError(f"{self.name} answered {len(response.results)} results for {len(texts)} inputs")
        verdicts = []
        for result in response.results:
            # by alias: OpenAI's names (self-harm/intent); an endpoint may report fewer categories, or others
            categories = {k: bool(v) for k, v in result.categories.model_dump(by_alias=True).items() if v is not None}
            scores = {k: float(v) for k, v in result.category_scores.model_dump(by_alias=True).items()
                      if v is not None}
            verdicts.append(Verdict(bool(result.flagged), categories, scores))
        return verdicts


def build_checks(cfg: ServeConfig) -> list:
    """One check per `--moderation` spec, loaded now so a bad spec fails before the server starts."""
    checks = []
    for spec in cfg.moderation:
        kind, _, arg = spec.partition(":")
        if spec == "openai":
            checks.append(OpenAICheck(cfg.moderation_base_url, cfg.moderation_api_key_env, cfg.moderation_model,
                                      cfg.moderation_timeout, cfg.moderation_retries))
        elif kind == "words":
            checks.append(WordsCheck(arg))
        else:
            if not Path(arg).exists():
                raise ValueError(f"moderation model:{arg}: no such folder; give a saved text-classification model")
            checks.append(ModelCheck(arg, cfg.moderation_labels, cfg.moderation_threshold, device=cfg.device,
                                     trust_remote_code=cfg.trust_remote_code))
    return checks
