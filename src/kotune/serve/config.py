"""The options of `kotune chat` and `kotune serve`; the CLI builds their flags from these classes.

Light on imports (no torch, no FastAPI), so `kotune --help` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.common.options import opt


def _at_least_one(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")


@dataclass
class EngineOptions:
    """The model loaded into the generation engine, and how."""

    model: str = opt(help="model folder, hub id or LoRA adapter folder (e.g. runs/quickstart-sft)")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = opt("auto", "weights dtype (auto: bf16 on a GPU that supports "
                                                                 "it, else fp32)")
    device: str | None = opt(None, "cpu, cuda, cuda:1, ... (default: cuda when available)")
    threads: int | None = opt(None, "CPU threads for decoding (default: torch's; 1-2 is faster for small models on "
                                    "busy CPUs)")
    trust_remote_code: bool = opt(False, "run Python code shipped with the model repository (off by default)")


@dataclass
class ChatConfig(EngineOptions):
    """`kotune chat MODEL`: multi-turn chat in the terminal."""

    system: str | None = opt(None, "system message for the conversation")
    max_new_tokens: int = opt(512, "longest reply in tokens")
    temperature: float = opt(0.7, "0 = greedy")
    top_p: float = opt(0.9, "nucleus sampling")
    top_k: int = opt(0, "0 = off (the default)")
    repetition_penalty: float = opt(1.1, "1 = off")
    seed: int | None = opt(None, "make replies reproducible")

    def __post_init__(self) -> None:
        _at_least_one(self, "max_new_tokens", "threads")


@dataclass
class ServeConfig(EngineOptions):
    """`kotune serve MODEL`: an OpenAI-compatible API and a chat page."""

    host: str = opt("127.0.0.1", "interface to bind (127.0.0.1: this machine only; 0.0.0.0 = every interface, "
                                 "set an API key then)")
    port: int = opt(8000, "TCP port")
    api_key: str | None = opt(None, "require 'Authorization: Bearer KEY' on /v1 routes (default: $KOTUNE_API_KEY, "
                                    "else none)")
    served_model_name: str | None = opt(None, "model id clients send and /v1/models lists (default: the folder's name)")
    max_batch_size: int = opt(16, "requests decoded together")
    max_queue: int = opt(64, "requests waiting for the batch; more get HTTP 429")
    max_prompt_tokens: int | None = opt(None, "longest prompt in tokens (default: the model's context)")
    max_tokens: int = opt(1024, "most tokens a request may ask for (and the default for chat requests that do not say)")
    allow_origins: list[str] = opt([], "let web pages from ORIGIN call the API (CORS); repeatable; the built-in page "
                                       "needs none", flag="--allow-origin", cli="repeat")
    moderation: list[str] = opt([], "check every user message before the model sees it: openai (an endpoint "
                                    "speaking /v1/moderations), words:FILE (a line each: a word, re:REGEX, !EXCEPTION or "
                                    "[category]), model:PATH (a local text-classification model); repeatable or "
                                    "comma-separated",
                                cli="repeat")
    moderation_on_error: Literal["allow", "block"] = opt("block", "when a check fails or times out: block the "
                                                                  "request (a content_filter reply) or allow it")
    moderation_timeout: float = opt(10.0, "seconds one moderation call may take")
    moderation_retries: int = opt(2, "retries of a failed or timed-out `openai` moderation call")
    moderation_message: str = opt("죄송합니다. 이 요청에는 부적절한 내용이 포함되어 있어 답변드릴 수 없습니다. "
                                  "다른 질문을 해 주세요.", "the reply a flagged request gets")
    moderation_base_url: str = opt("https://api.openai.com/v1", "`openai` moderation: base URL of the API")
    moderation_api_key_env: str = opt("OPENAI_API_KEY", "`openai` moderation: NAME of the environment variable "
                                                        "holding its key")
    moderation_model: str = opt("omni-moderation-latest", "`openai` moderation: the model asked")
    moderation_labels: list[str] = opt([], "`model:` moderation: labels that flag (default: every label but the "
                                           "model's label 0, conventionally the harmless one)", cli="comma")
    moderation_threshold: float = opt(0.5, "`model:` moderation: a flagging label's score that flags")
    log_flagged_text: bool = opt(False, "write the flagged user text into the log line (off: category only)")

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port: {self.port} is not a TCP port (1-65535)")
        _at_least_one(self, "max_batch_size", "max_queue", "max_tokens", "max_prompt_tokens", "threads")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key: must not be empty (leave it out to serve without a key)")
        self.moderation = split_specs(self.moderation)
        if self.moderation_timeout <= 0:
            raise ValueError(f"moderation_timeout: must be > 0 seconds, got {self.moderation_timeout}")
        if self.moderation_retries < 0:
            raise ValueError(f"moderation_retries: must be >= 0, got {self.moderation_retries}")
        if not 0 < self.moderation_threshold <= 1:
            raise ValueError(f"moderation_threshold: a score between 0 and 1, got {self.moderation_threshold}")
        if not self.moderation_message.strip():
            raise ValueError("moderation_message: must not be empty (it is what a flagged request is told)")


MODERATION_KINDS = ("openai", "words:", "model:")


def split_specs(values: list[str]) -> list[str]:
    """`--moderation` values, each maybe a comma list, as one spec per item; a comma inside a path stays there
    (a piece that does not start a spec belongs to the one before it).

    Raises:
        ValueError: a spec that is none of openai, words:FILE, model:PATH, with what to write instead.
    """
    specs: list[str] = []
    for piece in (part.strip() for value in values for part in value.split(",")):
        if specs and not piece.startswith(MODERATION_KINDS):
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if not (spec == "openai" or (kind in ("words", "model") and arg.strip())):
            raise ValueError(f"moderation: {spec!r} is not a moderation spec; write openai, words:FILE or "
                             "model:PATH")
    return specs
