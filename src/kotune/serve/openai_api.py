"""`kotune serve`: an OpenAI-compatible HTTP API (FastAPI + SSE) and a chat page, over the one engine.

Routes: `/v1/chat/completions` and `/v1/completions` (streamed as server-sent events ending in `data: [DONE]`,
or whole), `/v1/models`, `/health` (the engine's and the server's counters), and the chat page at `/`. Every
error has OpenAI's shape `{"error": {"message", "type", "param", "code"}}`.

With `--moderation`, the user messages of each request that passed validation are checked (`moderation_gate`)
before the engine sees it; a flagged request is answered like any reply, with the configured message and
`finish_reason: "content_filter"`. With a local check (`words:` or `model:`) the server also answers
`/v1/moderations`.

The event loop never waits on the model: prompts are tokenized in a worker thread, the engine decodes in its own
thread and hands each output to the loop with `call_soon_threadsafe`. A client that disconnects cancels its
request (`Counters` keeps count). Requests beyond the engine's batch and queue get 429. Binds 127.0.0.1 unless
told otherwise; with an API key (`--api-key` or KOTUNE_API_KEY) every `/v1` route wants
`Authorization: Bearer KEY`.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from kotune.models.generate import Engine, EngineBusy, Output, SamplingParams
from kotune.serve import protocol as p
from kotune.serve.config import ServeConfig
from kotune.serve.moderation_gate import Gate

log = logging.getLogger("kotune.serve")


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.body, self.headers = status, p.error_body(message, type, param, code), headers


@dataclass
class Counters:
    """What the server did with generation requests since it started (event loop only; shown by /health).

    Every accepted request ends exactly once, as finished, disconnected or failed, so `active` is what is still
    being answered. With the engine's own counts a client can check that every disconnect stopped its generation:
    `disconnected` equals the engine's `cancelled`, and `active`, `running` and `waiting` fall back to 0.
    """

    accepted: int = 0
    """Requests the engine took (queued or decoding)."""
    finished: int = 0
    """Answered to the end (stop or length), whole or streamed."""
    disconnected: int = 0
    """The client left before the end; its generation was cancelled."""
    failed: int = 0
    """The generation itself failed (answered 500, or an error event in the stream)."""
    rejected: int = 0
    """Answered 429: the batch and the waiting queue were full."""
    server_errors: int = 0
    """Every 5xx answer (failed generations and crashes alike)."""

    def as_dict(self) -> dict:
        ended = self.finished + self.disconnected + self.failed
        return {**self.__dict__, "active": self.accepted - ended}


class AsyncGeneration:
    """One engine request as seen from the event loop: outputs arrive on an asyncio queue."""

    def __init__(self, engine: Engine, prompt_ids: list[int], params: SamplingParams, counters: Counters):
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Output] = asyncio.Queue()
        # the engine thread hands each output to the event loop; it never touches the queue itself
        self._handle = engine.submit(prompt_ids, params,
                                     lambda out: loop.call_soon_threadsafe(self._queue.put_nowait, out))
        self._counters, self._ended = counters, False
        self.final: Output | None = None  # the engine's last Output, once the loop has seen it
        counters.accepted += 1

    def end(self) -> None:
        """The response is over: count how the request ended (once). Before the engine's last Output arrived,
        that means the client left (or the server is stopping), so the generation is cancelled."""
        if self.final is None:
            self._handle.cancel()
            outcome = "disconnected"
        else:
            outcome = {"error": "failed", "cancelled": "disconnected"}.get(self.final.finish_reason, "finished")
        if not self._ended:
            self._ended = True
            setattr(self._counters, outcome, getattr(self._counters, outcome) + 1)

    async def __aiter__(self) -> AsyncIterator[Output]:
        while True:
            out = await self._queue.get()
            if out.finished:
                self.final = out
            yield out
            if out.finished:
                return

    async def collect(self) -> Output:
        texts: list[str] = []
        async for out in self:
            texts.append(out.text)
        return Output("".join(texts), out.finish_reason, out.prompt_tokens, out.completion_tokens, out.error)


def create_app(engine: Engine, cfg: ServeConfig, checks: list | None = None) -> FastAPI:
    """The FastAPI app serving `engine` (whoever made the engine closes it); `checks` (moderation.build_checks)
    see every request's user messages before the engine does."""
    model_id = cfg.served_model_name or Path(cfg.model.rstrip("/")).name or cfg.model
    created = p.now()
    app = FastAPI(title="kotune", docs_url=None, redoc_url=None, openapi_url=None)
    counters = app.state.counters = Counters()
    gate = app.state.moderation = Gate(checks or [], cfg)
    if cfg.allow_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cfg.allow_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    _error_handlers(app, counters)
    page, page_csp = _page()

    async def require_key(request: Request) -> None:
        if cfg.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise APIError(401, "You didn't provide an API key: send the header 'Authorization: Bearer <key>'.",
                           code="missing_api_key")
        if not secrets.compare_digest(token.strip().encode(), cfg.api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    auth = [Depends(require_key)]

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": page_csp, "X-Content-Type-Options": "nosniff",
                                           "Referrer-Policy": "no-referrer"})

    @app.get("/health")
    async def health() -> dict:
        moderation = {"moderation": gate.counters.as_dict()} if gate.checks else {}
        return {"status": "ok", "model": model_id, **engine.stats(), "requests": counters.as_dict(), **moderation}

    @app.get("/v1/models", dependencies=auth)
    async def models() -> p.ModelList:
        return p.ModelList(data=[p.ModelCard(id=model_id, created=created)])

    async def answer(body, request: Request, ids: list[int], params: SamplingParams, texts: list[str], what: str,
                     events: Callable[[AsyncIterator[Output]], AsyncIterator[str]]) -> Output | Response:
        """The output a request is answered with, or the Response that answers it instead (its event stream, or 499
        when the client left). Moderation of the user's `texts` comes first: a flagged request gets the refusal."""
        if (await gate.decide(texts, what)).flagged:
            out = _refusal(cfg, ids)
            return StreamingResponse(events(_once(out)), **_SSE_HEADERS) if body.stream else out
        gen = _submit(engine, ids, params, counters)
        if body.stream:
            return _SSE(events(gen), gen)
        out = await _collect_or_cancel(gen, request)
        if out is None:
            return Response(status_code=499)  # nginx's "client closed request": never seen by anyone
        _raise_if_failed(out)
        return out

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: p.ChatCompletionRequest, request: Request) -> Response:
        encode = lambda: engine.encode_chat(body.message_dicts())  # noqa: E731
        ids, params = await _prepare(engine, cfg, model_id, body, encode, "messages")
        rid = p.new_id("chatcmpl")
        out = await answer(body, request, ids, params, [m.text() for m in body.messages if m.role == "user"],
                           f"chat request {rid}", lambda gen: _chat_events(gen, rid, model_id, body.include_usage))
        if isinstance(out, Response):
            return out
        return JSONResponse(p.ChatCompletion(
            id=rid, created=p.now(), model=model_id, usage=p.Usage.of(out.prompt_tokens, out.completion_tokens),
            choices=[p.ChatChoice(message=p.AssistantMessage(content=out.text), finish_reason=out.finish_reason)],
        ).model_dump())

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: p.CompletionRequest, request: Request) -> Response:
        ids, params = await _prepare(engine, cfg, model_id, body, lambda: engine.encode_text(body.prompt), "prompt",
                                     default_max_tokens=16)  # OpenAI's default for text completions
        rid = p.new_id("cmpl")
        out = await answer(body, request, ids, params, [body.prompt], f"completion request {rid}",
                           lambda gen: _completion_events(gen, rid, model_id, body.include_usage))
        if isinstance(out, Response):
            return out
        return JSONResponse(p.Completion(
            id=rid, created=p.now(), model=model_id, usage=p.Usage.of(out.prompt_tokens, out.completion_tokens),
            choices=[p.TextChoice(text=out.text, finish_reason=out.finish_reason)],
        ).model_dump())

    if gate.serves_moderations:
        @app.post("/v1/moderations", dependencies=auth)
        async def moderations(body: p.ModerationRequest) -> p.ModerationResponse:
            try:
                verdicts = await gate.moderate(body.texts())
            except Exception as e:
                log.exception("/v1/moderations failed")
                raise APIError(500, f"moderation failed: {type(e).__name__}: {e}", type="server_error") from e
            results = [p.ModerationResult(flagged=v.flagged, categories=v.categories, category_scores=v.scores)
                       for v in verdicts]
            return p.ModerationResponse(id=p.new_id("modr"), model=body.model or model_id, results=results)

    return app


def _refusal(cfg: ServeConfig, ids: list[int]) -> Output:
    """What a flagged request is answered: the configured message, finished by the content filter."""
    return Output(cfg.moderation_message, "content_filter", prompt_tokens=len(ids), completion_tokens=0)


async def _once(out: Output) -> AsyncIterator[Output]:
    yield out


async def _prepare(engine: Engine, cfg: ServeConfig, model_id: str, body, encode, prompt_field: str, *,
                   default_max_tokens: int | None = None) -> tuple[list[int], SamplingParams]:
    """Check the model and limits and tokenize off the event loop: the prompt and how to sample its reply."""
    if body.model not in (model_id, cfg.model):
        raise APIError(404, f"The model '{body.model}' does not exist; this server serves '{model_id}'.",
                       param="model", code="model_not_found")
    try:
        ids = await run_in_threadpool(encode)
    except Exception as e:  # a chat template may reject a conversation (jinja raise_exception)
        raise APIError(400, f"could not render the prompt: {e}", param=prompt_field) from e
    limit = min(cfg.max_prompt_tokens or engine.max_context, engine.max_context - 1)
    if len(ids) > limit:
        raise APIError(400, f"the prompt has {len(ids)} tokens; this server accepts at most {limit}: shorten it",
                       param=prompt_field, code="context_length_exceeded")
    requested = body.requested_max_tokens()
    if requested is not None and requested > cfg.max_tokens:
        raise APIError(400, f"max_tokens is {requested}; this server allows at most {cfg.max_tokens}",
                       param="max_tokens")
    room = engine.max_context - len(ids)
    max_new = requested or min(default_max_tokens or cfg.max_tokens, cfg.max_tokens, room)
    if max_new > room:
        raise APIError(400, f"this model's maximum context length is {engine.max_context} tokens; the prompt has "
                       f"{len(ids)} and max_tokens asks for {max_new}: lower max_tokens to at most {room}",
                       param="max_tokens", code="context_length_exceeded")
    params = SamplingParams(
        max_new_tokens=max_new, temperature=1.0 if body.temperature is None else body.temperature,
        top_p=body.top_p or 1.0, top_k=body.top_k or 0, repetition_penalty=body.repetition_penalty or 1.0,
        stop=tuple(body.stop), seed=body.seed, ignore_eos=body.ignore_eos,
    )
    return ids, params


def _submit(engine: Engine, ids: list[int], params: SamplingParams, counters: Counters) -> AsyncGeneration:
    """Hand the request to the engine, or answer 429 when its batch and queue are full."""
    try:
        return AsyncGeneration(engine, ids, params, counters)
    except EngineBusy as e:
        counters.rejected += 1
        raise APIError(429, f"the server is busy ({e})", type="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": "1"}) from e


async def _collect_or_cancel(gen: AsyncGeneration, request: Request) -> Output | None:
    """The whole reply, unless the client disconnects first: then its generation is cancelled."""
    collect = asyncio.ensure_future(gen.collect())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler is cancelled (server shutdown)
        gone.cancel()
        if not collect.done():
            collect.cancel()
        gen.end()
    if not collect.done() or collect.cancelled():
        return None  # the client is gone: nobody to answer
    return collect.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _raise_if_failed(out: Output) -> None:
    if out.finish_reason == "error":
        raise APIError(500, out.error or "generation failed", type="server_error")


_SSE_HEADERS = {"media_type": "text/event-stream", "headers": {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}}


class _SSE(StreamingResponse):
    """Server-sent events of one generation, which ends with the response however that ends: streamed to the
    end, or the client gone (the response task is cancelled), even before the first event (then the events'
    generator never started, and a `finally` inside it would never run)."""

    def __init__(self, events: AsyncIterator[str], gen: AsyncGeneration):
        super().__init__(events, **_SSE_HEADERS)
        self._gen = gen

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._gen.end()


def _data(obj) -> str:
    payload = obj.model_dump_json(exclude_none=True) if hasattr(obj, "model_dump_json") else obj
    return f"data: {payload}\n\n"


def _error_event(out: Output) -> str:
    import json

    return _data(json.dumps(p.error_body(out.error or "generation failed", "server_error")))


async def _chat_events(gen: AsyncGeneration, rid: str, model: str, include_usage: bool) -> AsyncIterator[str]:
    created = p.now()

    def chunk(delta: p.Delta, finish: str | None = None, usage: p.Usage | None = None) -> str:
        choices = [] if usage else [p.ChatChunkChoice(delta=delta, finish_reason=finish)]
        return _data(p.ChatCompletionChunk(id=rid, created=created, model=model, choices=choices, usage=usage))

    yield chunk(p.Delta(role="assistant", content=""))
    async for out in gen:
        if out.finish_reason == "error":
            yield _error_event(out)
            return
        if out.text:
            yield chunk(p.Delta(content=out.text))
        if out.finished:
            yield chunk(p.Delta(), out.finish_reason)
            if include_usage:
                yield chunk(p.Delta(), usage=p.Usage.of(out.prompt_tokens, out.completion_tokens))
    yield "data: [DONE]\n\n"


async def _completion_events(gen: AsyncGeneration, rid: str, model: str, include_usage: bool) -> AsyncIterator[str]:
    created = p.now()
    async for out in gen:
        if out.finish_reason == "error":
            yield _error_event(out)
            return
        if out.text or out.finished:
            choice = p.TextChoice(text=out.text, finish_reason=out.finish_reason)
            yield _data(p.Completion(id=rid, created=created, model=model, choices=[choice]))
        if out.finished and include_usage:
            usage = p.Usage.of(out.prompt_tokens, out.completion_tokens)
            yield _data(p.Completion(id=rid, created=created, model=model, choices=[], usage=usage))
    yield "data: [DONE]\n\n"


def _error_handlers(app: FastAPI, counters: Counters) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        if e.status >= 500:
            counters.server_errors += 1
        return JSONResponse(e.body, status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        param = None if first.get("type") == "json_invalid" else _param(first.get("loc", ()))
        messages = [_describe(err) for err in errors[:3]]
        return JSONResponse(p.error_body("; ".join(messages), param=param or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {e.detail}"
        return JSONResponse(p.error_body(message), status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        counters.server_errors += 1
        return JSONResponse(p.error_body("internal server error", "server_error"), status_code=500)


def _param(loc) -> str:
    """('body', 'messages', 0, 'role') -> 'messages[0].role'."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(err: dict) -> str:
    kind, param = err.get("type", ""), _param(err.get("loc", ()))
    if kind == "json_invalid":
        return f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
    if not param and kind in ("missing", "model_attributes_type", "dict_type"):
        return "the request body must be a JSON object"
    if kind == "extra_forbidden":
        return f"'{param}' is not supported by this server"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "missing":
        return f"'{param}' is required"
    got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], (dict, list)) else ""
    return f"Invalid '{param}': {msg}{got}" if param else msg


def _page() -> tuple[str, str]:
    """The chat page and a Content-Security-Policy that allows only its own inline script and style."""
    html = resources.files("kotune.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    def sha(tag: str) -> str:
        match = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        return "'sha256-" + base64.b64encode(hashlib.sha256(match.group(1).encode()).digest()).decode() + "'"

    csp = (f"default-src 'none'; script-src {sha('script')}; style-src {sha('style')}; connect-src 'self'; "
           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, csp


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of `host` on `port` (as uvicorn would bind them), not yet listening.

    Bound before the model loads, so a busy port fails in a second instead of after minutes of loading, and
    handed to uvicorn, so no other program can take the port in between.

    Raises:
        OSError: the port is taken or may not be used, with what to do about it.
    """
    try:
        infos = sorted(set(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)))
    except socket.gaierror as e:
        raise OSError(f"--host {host}: cannot resolve it ({e.strerror}); use 127.0.0.1 for this machine only, "
                      "or 0.0.0.0 for every interface") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart past TIME_WAIT
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as e:
        for sock in sockets:
            sock.close()
        where = f"port {port} on {host}"
        if e.errno == errno.EADDRINUSE:
            raise OSError(f"{where} is already in use, so the model was not loaded: stop the program listening "
                          f"there (`ss -ltnp 'sport = :{port}'` shows it) or choose a free port with --port") from None
        if e.errno == errno.EACCES:
            raise OSError(f"{where}: permission denied (ports below 1024 need root): choose --port 1024 or "
                          "above") from None
        raise OSError(f"{where}: cannot listen ({e.strerror}): check --host and --port") from None
    return sockets


def run(cfg: ServeConfig) -> None:
    """Check the port, load the model and serve until interrupted (the API key from $KOTUNE_API_KEY if unset)."""
    import uvicorn

    from kotune.serve.moderation import build_checks

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if cfg.api_key is None and os.environ.get("KOTUNE_API_KEY"):
        cfg = replace(cfg, api_key=os.environ["KOTUNE_API_KEY"])

    if not _is_loopback(cfg.host) and cfg.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach port %d can use the model",
                    cfg.host, cfg.port)
    sockets = bind(cfg.host, cfg.port)
    try:
        checks = build_checks(cfg)  # before the model: a bad --moderation spec fails in seconds
        for check in checks:
            print(f"kotune: moderating user messages with {check.name}"
                  + (f" (flags: {', '.join(check.categories)})" if check.categories else ""), flush=True)
        engine = Engine.load(cfg.model, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code,
                             max_batch_size=cfg.max_batch_size, max_waiting=cfg.max_queue, threads=cfg.threads)
        try:
            if engine.template_note:
                print(f"note: {engine.template_note}", flush=True)
            app = create_app(engine, cfg, checks)
            shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
            print(f"kotune: serving {cfg.model} at http://{shown}:{cfg.port}/ (OpenAI API under /v1)", flush=True)
            config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="info",
                                    timeout_graceful_shutdown=5)
            uvicorn.Server(config).run(sockets=sockets)
        finally:
            engine.close()
    finally:
        for sock in sockets:
            sock.close()
