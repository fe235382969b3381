"""`kotune eval judge`: pairwise comparison of chat models by an OpenAI-compatible judge, ChatBaker's way.

1. Answers: every contestant answers every question. A kotune model folder answers here, through kotune's
   generation engine with its own chat template (as `kotune eval generate` does); an endpoint (`MODEL@URL`)
   answers over HTTP. Answers are cached in `answers.jsonl` by (contestant, question, decoding settings).
2. Judgments: for each pair and question the judge sees the two answers twice, each shown first once. A reply
   without a readable verdict is asked again `parse_retries` times, then recorded as unparsed. Judgments are
   cached in `judgments.jsonl` by (question, answer shown first, answer shown second, judge model,
   PROMPT_VERSION): a rerun asks nothing, an added contestant asks only its own pairs, and a killed run resumes.
3. Results: `judge.json` (settings, outcomes per question, tallies and win rates per pair and category),
   `judge.md` (tables) and `judge.png` (win rates with their 95% intervals).

Requests go through `kotune.common.openai_client` (self-instruct's client): `concurrency` in flight per
endpoint, retries with back-off on timeouts, 429 and 5xx; an error retrying cannot fix (wrong URL, model or key)
stops the run, with every judgment made so far kept in the cache.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from kotune.common.openai_client import Client, RetriesExhausted, api_key
from kotune.eval.config import JudgeConfig, is_endpoint, parse_endpoint
from kotune.eval.judge_data import JsonlCache, Question, default_questions, digest, load_questions
from kotune.eval.judge_prompt import PROMPT_VERSION, judge_prompt, parse_verdict
from kotune.eval.judge_score import FAILED, markdown, outcome, plot, summarize
from kotune.eval.runs import default_out_dir, unique_labels, write_json

ANSWERS_JSONL = "answers.jsonl"
JUDGMENTS_JSONL = "judgments.jsonl"
JUDGE_JSON = "judge.json"
JUDGE_MD = "judge.md"
JUDGE_PNG = "judge.png"
RETRY_TEMPERATURE = 0.7  # a re-asked judgment samples: at temperature 0 a judge would mostly repeat its reply


@dataclass(frozen=True)
class Endpoint:
    """The settings `openai_client.Client` reads, for the judge or an endpoint contestant."""

    base_url: str
    model: str
    api_key_env: str | None
    temperature: float
    max_tokens: int
    timeout_s: float
    max_retries: int
    backoff_s: float
    max_backoff_s: float
    top_p: float = 1.0
    api: str = "chat"


@dataclass(frozen=True)
class Contestant:
    label: str
    spec: str  # the folder, or MODEL@URL[@KEY_ENV] as given
    identity: str  # what its answers are cached under: the folder and its files' times, or model@url
    endpoint: Endpoint | None = None


def _folder_identity(path: str) -> str:
    """A model folder's path and the newest time any file directly in it changed: retraining invalidates answers."""
    p = Path(path)
    times = [f.stat().st_mtime_ns for f in p.iterdir() if f.is_file()] if p.is_dir() else []
    return f"{p.resolve() if p.exists() else path}@{max(times, default=0)}"


def contestants(cfg: JudgeConfig) -> list[Contestant]:
    specs = [*cfg.models, *cfg.endpoints]  # distinct: JudgeConfig refuses repeats
    names = [parse_endpoint(s)[0] if is_endpoint(s) else s for s in specs]
    out = []
    for spec, label in zip(specs, unique_labels(names)):
        if is_endpoint(spec):
            model, url, key_env = parse_endpoint(spec)
            endpoint = Endpoint(url, model, key_env, cfg.temperature, cfg.max_new_tokens, cfg.timeout_s,
                                cfg.max_retries, cfg.backoff_s, cfg.max_backoff_s)
            out.append(Contestant(label, spec, f"{model}@{url}", endpoint))
        else:
            out.append(Contestant(label, spec, _folder_identity(spec)))
    return out


def pairs(players: list[Contestant], all_pairs: bool) -> list[tuple[Contestant, Contestant]]:
    if all_pairs:
        return [(a, b) for i, a in enumerate(players) for b in players[i + 1:]]
    return [(players[0], other) for other in players[1:]]


# ------------------------------------------------------------------------------------------ answers


def _answer_key(c: Contestant, q: Question, cfg: JudgeConfig) -> str:
    return digest("answer", c.identity, q.messages, cfg.max_new_tokens, cfg.temperature)


def _engine_answers(c: Contestant, todo: list[Question], cfg: JudgeConfig) -> list[tuple[str, str, int]]:
    """(text, finish reason, tokens) per question, decoded by kotune's engine from the folder `c.spec`."""
    from kotune.eval.generate_eval import engine_generate
    from kotune.models.generate import Engine

    engine = Engine.load(c.spec, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code,
                         max_batch_size=cfg.batch_size)
    try:
        generate = engine_generate(engine, temperature=cfg.temperature, seed=cfg.seed)
        out = []
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start:start + cfg.batch_size]
            out += [(text, "stop" if eos else "length", n) for text, eos, n in
                    generate([q.messages for q in chunk], cfg.max_new_tokens)]
        return out
    finally:
        engine.close()


async def _endpoint_answers(c: Contestant, todo: list[Question], cfg: JudgeConfig) -> list[tuple | None]:
    """(text, finish reason, None) per question from an endpoint; None where the request failed every retry."""
    client = Client(c.endpoint, rng=random.Random(cfg.seed), key_field=f"endpoint {c.spec}")
    gate = asyncio.Semaphore(cfg.concurrency)

    async def one(q: Question):
        async with gate:
            try:
                reply = await client.complete(q.messages)
            except RetriesExhausted as e:
                print(f"{c.label}: question {q.id}: {e}")
                return None
            return reply.text, reply.finish_reason, None

    try:
        return await asyncio.gather(*(one(q) for q in todo))
    finally:
        await client.close()


def collect_answers(players: list[Contestant], questions: list[Question], cfg: JudgeConfig,
                    cache: JsonlCache) -> dict[tuple[str, str], str | None]:
    """{(label, question id): answer text, or None when an endpoint failed}; new answers go into `cache`."""
    answers: dict[tuple[str, str], str | None] = {}
    for c in players:
        todo = [q for q in questions if cache.get(_answer_key(c, q, cfg)) is None]
        if todo:
            print(f"{c.label}: answering {len(todo)} of {len(questions)} questions")
            made = (asyncio.run(_endpoint_answers(c, todo, cfg)) if c.endpoint else _engine_answers(c, todo, cfg))
            for q, got in zip(todo, made):
                if got is not None:
                    text, finish, n_tokens = got
                    cache.add({"key": _answer_key(c, q, cfg), "contestant": c.label, "spec": c.spec,
                               "question_id": q.id, "category": q.category, "answer": text, "finish_reason": finish,
                               "tokens": n_tokens})
        for q in questions:
            rec = cache.get(_answer_key(c, q, cfg))
            answers[c.label, q.id] = rec["answer"] if rec else None
    return answers


# ------------------------------------------------------------------------------------------ judgments


def judge_endpoint(cfg: JudgeConfig) -> Endpoint:
    return Endpoint(cfg.judge_url.rstrip("/"), cfg.judge_model, cfg.judge_key_env, 0.0, cfg.judge_max_tokens,
                    cfg.timeout_s, cfg.max_retries, cfg.backoff_s, cfg.max_backoff_s)


def _judgment_key(q: Question, answer_a: str, answer_b: str, judge_model: str) -> str:
    return digest("judgment", q.messages, q.reference, answer_a, answer_b, judge_model, PROMPT_VERSION)


class _Judging:
    """Asks the judge for every (question, A, B) not in the cache; counts the requests it sends."""

    def __init__(self, cfg: JudgeConfig, cache: JsonlCache):
        self.cfg, self.cache, self.requests, self.failed = cfg, cache, 0, 0
        self.endpoint = judge_endpoint(cfg)

    async def run(self, todo: dict[str, tuple[Question, str, str]]) -> None:
        from tqdm.auto import tqdm

        rng = random.Random(self.cfg.seed)
        first = Client(self.endpoint, rng=rng, key_field="judge_key_env")
        again = Client(replace(self.endpoint, temperature=RETRY_TEMPERATURE), rng=rng, key_field="judge_key_env")
        gate = asyncio.Semaphore(self.cfg.concurrency)
        bar = tqdm(total=len(todo), desc="judge", unit="judgment")
        try:
            tasks = [asyncio.create_task(self._one(key, *item, first, again, gate, bar)) for key, item in todo.items()]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()  # an error retrying cannot fix: stop asking; what was judged is in the cache
                raise
        finally:
            bar.close()
            await first.close()
            await again.close()

    async def _one(self, key: str, q: Question, answer_a: str, answer_b: str, first: Client, again: Client,
                   gate: asyncio.Semaphore, bar) -> None:
        prompt = judge_prompt(q.messages, answer_a, answer_b, q.reference)
        async with gate:
            replies = []
            for attempt in range(self.cfg.parse_retries + 1):
                self.requests += 1
                try:
                    reply = await (first if attempt == 0 else again).complete(prompt)
                except RetriesExhausted as e:
                    print(f"judge: question {q.id}: {e}")
                    self.failed += 1
                    bar.update(1)
                    return  # not cached: the next run asks again
                replies.append(reply.text)
                verdict = parse_verdict(reply.text)
                if verdict is not None:
                    break
        self.cache.add({"key": key, "question_id": q.id, "judge_model": self.cfg.judge_model,
                        "prompt_version": PROMPT_VERSION, "answer_a": answer_a, "answer_b": answer_b,
                        "verdict": verdict, "attempts": len(replies), "judgment": replies[-1],
                        **({"unparsed_replies": replies[:-1]} if len(replies) > 1 else {})})
        bar.update(1)


def _verdict(cache: JsonlCache, q: Question, answer_a: str | None, answer_b: str | None, judge_model: str) -> str | None:
    if answer_a is None or answer_b is None:
        return FAILED
    rec = cache.get(_judgment_key(q, answer_a, answer_b, judge_model))
    return FAILED if rec is None else rec["verdict"]


def judge_all(players, questions, answers, cfg: JudgeConfig, cache: JsonlCache) -> tuple[list[dict], _Judging]:
    """Judge what the cache lacks, then read one outcome row per (pair, question) from the cache."""
    matches = pairs(players, cfg.all_pairs)
    todo: dict[str, tuple[Question, str, str]] = {}
    for x, y in matches:
        for q in questions:
            ax, ay = answers[x.label, q.id], answers[y.label, q.id]
            if ax is None or ay is None:
                continue
            for a, b in ((ax, ay), (ay, ax)):
                key = _judgment_key(q, a, b, cfg.judge_model)
                if cache.get(key) is None:
                    todo[key] = (q, a, b)
    judging = _Judging(cfg, cache)
    if todo:
        print(f"judge {cfg.judge_model}: {len(todo)} judgments to ask ({len(cache.records)} cached)")
        asyncio.run(judging.run(todo))
    rows = []
    for x, y in matches:
        for q in questions:
            ax, ay = answers[x.label, q.id], answers[y.label, q.id]
            v1, v2 = _verdict(cache, q, ax, ay, cfg.judge_model), _verdict(cache, q, ay, ax, cfg.judge_model)
            result, inconsistent = outcome(v1, v2)
            rows.append({"model": x.label, "opponent": y.label, "question_id": q.id, "category": q.category,
                         "verdicts": [v1, v2], "outcome": result, "inconsistent": inconsistent})
    return rows, judging


# ------------------------------------------------------------------------------------------ run


def run(cfg: JudgeConfig) -> dict:
    """Answer, judge, tally; write answers.jsonl, judgments.jsonl, judge.json, judge.md and judge.png.

    Args:
        cfg: contestants, judge endpoint, questions, decoding and request settings (see `JudgeConfig`).

    Returns:
        judge.json's content; `requests` counts the judge requests this run sent.
    """
    api_key(judge_endpoint(cfg), "judge_key_env")  # a missing key is reported before any work
    players = contestants(cfg)
    for c in players:
        if c.endpoint:
            api_key(c.endpoint, f"endpoint {c.spec}")
    source = cfg.questions or default_questions()
    questions = load_questions(source)[:cfg.limit]
    out = Path(cfg.out) if cfg.out else default_out_dir(players[0].spec)
    started = time.time()
    with JsonlCache(out / ANSWERS_JSONL) as answer_cache:
        answers = collect_answers(players, questions, cfg, answer_cache)
    with JsonlCache(out / JUDGMENTS_JSONL) as judgment_cache:
        rows, judging = judge_all(players, questions, answers, cfg, judgment_cache)
    results = {
        "settings": {"judge_model": cfg.judge_model, "judge_url": cfg.judge_url, "prompt_version": PROMPT_VERSION,
                     "questions": str(source), "n_questions": len(questions), "parse_retries": cfg.parse_retries,
                     "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "seed": cfg.seed,
                     "seconds": round(time.time() - started, 1)},
        "contestants": [{"label": c.label, "spec": c.spec, "kind": "endpoint" if c.endpoint else "model"}
                        for c in players],
        "requests": judging.requests, "failed_requests": judging.failed,
        "pairs": summarize(rows, cfg.seed),
        "outcomes": rows,
    }
    write_json(out / JUDGE_JSON, results)
    (out / JUDGE_MD).write_text(markdown(results), encoding="utf-8")
    plot(results, out / JUDGE_PNG)
    print(markdown(results).split("\n\n", 2)[2].split("\n\n![")[0])
    print(f"wrote {out / JUDGE_JSON}, {out / JUDGE_MD} and {out / JUDGE_PNG} ({judging.requests} judge requests)")
    return results
