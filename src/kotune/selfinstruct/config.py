"""The `kotune selfinstruct` recipe: teacher endpoint, seed tasks, Korean filters and dedup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.common.openai_client import EndpointRetries
from kotune.common.options import opt

# Instructions mentioning these ask for something a text model cannot give (pictures, sound, files, maps) or
# cannot see. Korean terms match inside an eojeol (사진을, 가족사진), English ones as whole words (+plural).
DEFAULT_BLACKLIST = [
    "이미지", "그림", "사진", "그래프", "동영상", "영상", "비디오", "음악", "오디오", "녹음", "파일", "지도",
    "도표", "다이어그램", "순서도", "플로차트", "그려", "그리기",
    "image", "picture", "photo", "graph", "video", "audio", "music", "file", "map", "draw", "plot",
    "flowchart", "diagram", "go to",
]
# Words that contain a blacklisted term but are about something else (a leader, a shadow, supervised learning).
DEFAULT_BLACKLIST_EXCEPTIONS = [
    "지도자", "지도부", "지도층", "지도력", "지도교수", "지도하", "지도해", "지도 학습", "지도학습", "그림자", "파일럿",
]


@dataclass
class TeacherConfig(EndpointRetries):
    base_url: str = opt(help="OpenAI-compatible API root: https://api.openai.com/v1, or http://127.0.0.1:8000/v1 "
                             "for `kotune serve`")
    model: str = opt(help="model name sent with every request (for `kotune serve`: the served model's name)")
    api_key_env: str | None = opt("OPENAI_API_KEY", "environment variable that holds the API key; null for a server "
                                                    "without a key")
    api: Literal["chat", "completions"] = opt(
        "chat", "chat: /chat/completions, the prompt as one user message; completions: /completions, the model "
        "continues the prompt (Alpaca's way, for base models)")
    temperature: float = opt(1.0, "sampling temperature (Alpaca: 1.0)")
    top_p: float = opt(1.0, "nucleus sampling (Alpaca: 1.0)")
    max_tokens: int = opt(3072, "most tokens per reply (Alpaca: 3072); a reply cut at this length loses its last task")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: {self.base_url!r} is not an http(s) URL")
        if not self.model.strip():
            raise ValueError("model: must not be empty")
        if not 0 <= self.temperature <= 2 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be in [0, 2] and top_p in (0, 1]")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be at least 1, got {self.max_tokens}")


@dataclass
class FilterConfig:
    min_chars: int = opt(6, "fewest characters (spaces not counted) in an instruction")
    max_chars: int = opt(500, "most characters (spaces not counted) in an instruction")
    min_eojeol: int = opt(2, "fewest eojeol (space-separated words) in an instruction; Alpaca: more than 3 English "
                             "words, and a Korean eojeol carries a word and its particle")
    max_eojeol: int = opt(100, "most eojeol in an instruction (Alpaca: 150 English words)")
    min_hangul_ratio: float = opt(0.3, "least share of Hangul among the letters of an instruction (0 disables); "
                                       "replaces Alpaca's rule that drops every instruction not starting in ASCII")
    blacklist: list[str] = opt(DEFAULT_BLACKLIST, "terms that reject an instruction (tasks a text model cannot do)")
    blacklist_exceptions: list[str] = opt(DEFAULT_BLACKLIST_EXCEPTIONS, "words that contain a term but are allowed")

    def __post_init__(self) -> None:
        if not 0 < self.min_chars <= self.max_chars or not 0 < self.min_eojeol <= self.max_eojeol:
            raise ValueError("need 0 < min_chars <= max_chars and 0 < min_eojeol <= max_eojeol")
        if not 0 <= self.min_hangul_ratio <= 1:
            raise ValueError(f"min_hangul_ratio: must be in [0, 1], got {self.min_hangul_ratio}")


@dataclass
class SelfInstructConfig:
    """Self-instruct in Korean: new instruction data from an OpenAI-compatible teacher, filtered and deduplicated."""

    output: str = opt(help="JSON Lines file the accepted records are appended to; an existing file is resumed")
    teacher: TeacherConfig = opt(help="the model that writes new tasks")
    seeds: list[str] = opt(["data/seeds/ko_seed_tasks.jsonl", "data/seeds/koalpaca_seed_tasks.jsonl"],
                           "seed task files: Alpaca records {instruction, input, output} or self-instruct seed tasks "
                           "{instruction, instances: [{input, output}]}")
    num_instructions: int = opt(100, "stop when the output holds this many records (Alpaca: 52,002)")
    num_prompt_instructions: int = opt(3, "seed tasks shown in each prompt (Alpaca: 3)")
    num_tasks: int = opt(20, "tasks the prompt asks for, examples included (Alpaca: 20)")
    prompt_file: str | None = opt(None, "file with the text put before the examples; unset: kotune's Korean "
                                        "version of Alpaca's requirements")
    dedup_threshold: float = opt(0.7, "drop an instruction whose character ROUGE-L F with any kept one (seeds "
                                      "included) is greater than this (Alpaca: 0.7; equal is kept)")
    filters: FilterConfig = opt(FilterConfig(), "rejection rules")
    max_requests: int | None = opt(None, "stop after this many requests in this run (unset: until num_instructions)")
    max_failed_requests: int = opt(10, "stop with an error when this many requests failed after all their retries")
    seed: int = opt(42, "seed for choosing the example tasks of each prompt")

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds: at least one seed task file is needed")
        if self.num_instructions < 1:
            raise ValueError(f"num_instructions: must be at least 1, got {self.num_instructions}")
        if not 1 <= self.num_prompt_instructions < self.num_tasks:
            raise ValueError(f"need 1 <= num_prompt_instructions ({self.num_prompt_instructions}) < num_tasks "
                             f"({self.num_tasks}): the teacher writes the tasks after the examples")
        if not 0 < self.dedup_threshold < 1:
            raise ValueError(f"dedup_threshold: must be between 0 and 1, got {self.dedup_threshold}")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("max_requests: must be at least 1 (or unset)")
