"""The options of `kotune eval kobest`, `eval lm-eval` and `eval generate`, and of the pipeline's evaluation sections.

A pipeline section is the command's options without the models and the output folder (the pipeline sets those:
the final model, every earlier one as a baseline, `run_dir/eval`); the command's config adds them. Light on
imports: the CLI builds its flags from these classes and `kotune --help` must not load torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kotune.common.openai_client import EndpointRetries
from kotune.common.options import opt

from kotune.eval.kobest_reference import TASKS


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """`"boolq,copa"`, `"all"`, or a list; `kobest_` prefixes and case are forgiven. Raises ValueError."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [s.strip().lower().removeprefix("kobest_") for s in items if s.strip()]
    if names == ["all"]:
        return list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ValueError(f"tasks: unknown KoBEST task {', '.join(unknown) or '(none given)'}; "
                         f"choose from {','.join(TASKS)} (or all)")
    return list(dict.fromkeys(names))


def parse_shots(spec: str | Sequence[int]) -> list[int]:
    """`"0,5,10"` or a list of non-negative ints. Raises ValueError."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        shots = [int(s) for s in items if str(s).strip()]
    except ValueError:
        raise ValueError(f"shots: expected comma-separated integers like 0,5,10, got {spec!r}") from None
    if not shots or any(k < 0 for k in shots):
        raise ValueError(f"shots: expected non-negative integers like 0,5,10, got {spec!r}")
    return list(dict.fromkeys(shots))


def parse_batch_size(value: str | int) -> int | str:
    """A positive int, or `auto` (lm-eval finds the largest batch that fits)."""
    if str(value) == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"batch_size: expected a positive integer or auto, got {value!r}")
    return n


def _positive(name: str, value: int | None, what: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name}: expected a positive number of {what}, got {value}")


@dataclass
class ModelOptions:
    """How each evaluated model is loaded."""

    device: str | None = opt(None, "cuda, cuda:1, cpu, ... (default: cuda if available)")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = opt("auto", "auto: bf16 on a GPU that supports it, else fp32")
    trust_remote_code: bool = opt(False, "run Python code shipped with the model repository")


@dataclass
class Targets:
    """The models a command evaluates and where it writes; the pipeline sets these itself."""

    model: str = opt(help="model folder, hub id or LoRA adapter folder")
    baselines: list[str] = opt([], "another model evaluated the same way and shown beside MODEL; repeat for more "
                                    "(base vs SFT vs DPO)", flag="--baseline", cli="repeat")
    out: str | None = opt(None, "folder for results, report.md and charts (default runs/eval/<model name>)")


@dataclass
class HarnessOptions(ModelOptions):
    """What every lm-eval run takes: shot counts, a document limit, lm-eval's batch size."""

    shots: list[int] = opt([0], "few-shot counts, one run each, e.g. 0,5,10", cli="comma")
    limit: int | None = opt(None, "score only the first N test documents per task (quick checks; not comparable "
                                  "with published numbers)")
    batch_size: int | str = opt(8, "lm-eval batch size, or auto")

    def __post_init__(self) -> None:
        self.shots = parse_shots(self.shots)
        self.batch_size = parse_batch_size(self.batch_size)
        _positive("limit", self.limit, "documents")


@dataclass
class KobestSection(HarnessOptions):
    """The pipeline's `eval_kobest` section: KoBEST through lm-eval, on the base model and every trained stage."""

    tasks: list[str] = opt(list(TASKS), "KoBEST tasks, of boolq,copa,wic,hellaswag,sentineg, or all", cli="comma")
    data_dir: str | None = opt(None, "folder with <task>/{train,validation,test}.jsonl (default: the shipped "
                                     "KoBEST v1.0)")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tasks = parse_tasks(self.tasks)


@dataclass
class KobestConfig(KobestSection, Targets):
    """`kotune eval kobest MODEL`."""


@dataclass
class LmEvalSection(HarnessOptions):
    """The pipeline's `eval_lm_eval` section: any lm-eval tasks, on the base model and every trained stage."""

    tasks: list[str] = opt(help="lm-eval task or group names (arc_easy,piqa: data from the Hub) and/or folders of "
                                "task YAMLs (each YAML with a `task:` in it; local data works offline), comma- or "
                                "space-separated",
                           cli="flag", kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        items = [self.tasks] if isinstance(self.tasks, str) else self.tasks
        names = (name.strip() for item in items for name in str(item).split(","))  # `a,b` and `a b` alike
        self.tasks = list(dict.fromkeys(name for name in names if name))
        if not self.tasks:
            raise ValueError("tasks: give lm-eval task names (e.g. arc_easy,piqa) or a folder of task YAMLs")


@dataclass
class LmEvalConfig(LmEvalSection, Targets):
    """`kotune eval lm-eval MODEL --tasks NAMES|DIR`."""


@dataclass
class GenerateSection(ModelOptions):
    """The pipeline's `eval_generate` section: generation checks (stop rate, repetition, loops) on every model."""

    prompts: str | None = opt(None, "prompt file: .jsonl/.json records with prompt or messages, or one prompt per "
                                    "line (default: the shipped 50 Korean prompts)")
    limit: int | None = opt(None, "use only the first N prompts")
    max_new_tokens: int = opt(256, "token limit per reply; a reply that reaches it did not stop")
    batch_size: int = opt(16, "prompts decoded together")
    temperature: float = opt(0.0, "0 = greedy, so runs repeat exactly")

    def __post_init__(self) -> None:
        _positive("max_new_tokens", self.max_new_tokens, "tokens")
        _positive("batch_size", self.batch_size, "prompts")
        _positive("limit", self.limit, "prompts")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be 0 (greedy) or more, got {self.temperature}")


@dataclass
class GenerateConfig(GenerateSection, Targets):
    """`kotune eval generate MODEL`."""


def parse_endpoint(spec: str) -> tuple[str, str, str | None]:
    """`MODEL@URL` or `MODEL@URL@KEY_ENV` -> (model, url, key env). Raises ValueError naming the form."""
    model, _, rest = spec.partition("@")
    url, _, key_env = rest.partition("@")
    if not model.strip() or not url.startswith(("http://", "https://")):
        raise ValueError(f"endpoint {spec!r}: expected MODEL@URL or MODEL@URL@KEY_ENV, e.g. "
                         "gpt-4o-mini@https://api.openai.com/v1@OPENAI_API_KEY")
    if key_env:
        _check_env_name(f"endpoint {model}@{url}", key_env)
    return model.strip(), url.rstrip("/"), key_env or None


def _check_env_name(where: str, name: str) -> None:
    """An API key is read from the environment variable the user names; refuse what looks like a key instead."""
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
        raise ValueError(f"{where}: expected the NAME of an environment variable holding the key (like "
                         "OPENAI_API_KEY), not the key itself")


def is_endpoint(spec: str) -> bool:
    """A contestant written MODEL@http(s)://... is an endpoint; anything else is a model folder (or hub id)."""
    return "@http://" in spec or "@https://" in spec


@dataclass
class JudgeSection(ModelOptions, EndpointRetries):
    """The pipeline's `eval_judge` section: pairwise judging of chat models by an OpenAI-compatible judge."""

    judge_url: str = opt(help="the judge's OpenAI-compatible API root, e.g. https://api.openai.com/v1", cli="flag",
                         kw_only=True)
    judge_model: str = opt(help="the judge's model name, e.g. gpt-4o", cli="flag", kw_only=True)
    judge_key_env: str | None = opt("OPENAI_API_KEY", "environment variable holding the judge's API key (never the "
                                                      "key itself); null or '' for a server without a key")
    endpoints: list[str] = opt([], "a contestant served elsewhere, as MODEL@URL or MODEL@URL@KEY_ENV (e.g. "
                                   "gpt-4o-mini@https://api.openai.com/v1@OPENAI_API_KEY); repeat for more",
                               flag="--endpoint", cli="repeat")
    all_pairs: bool = opt(False, "judge every pair of contestants, not only the first against each other one")
    questions: str | None = opt(None, ".jsonl of questions ({id, category, prompt|messages, reference}); default: "
                                      "kotune's 82 Korean questions in the 8 MT-bench categories")
    limit: int | None = opt(None, "use only the first N questions")
    max_new_tokens: int = opt(512, "token limit of each contestant's answer")
    batch_size: int = opt(8, "questions decoded together by a kotune model")
    temperature: float = opt(0.0, "contestants' sampling temperature; 0 = greedy, so answers repeat")
    judge_max_tokens: int = opt(1024, "token limit of each judgment (its reasoning, then the verdict)")
    parse_retries: int = opt(2, "times a judgment without a readable verdict is asked again before it counts as "
                                "unparsed")
    seed: int = opt(0, "seed of the bootstrap intervals")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.judge_url.startswith(("http://", "https://")):
            raise ValueError(f"judge_url: {self.judge_url!r} is not an http(s) URL")
        if not self.judge_model.strip():
            raise ValueError("judge_model: must not be empty")
        if str(self.judge_key_env).strip().lower() in ("", "null", "none"):  # `--judge-key-env ""` or null: no key
            self.judge_key_env = None
        else:
            _check_env_name("judge_key_env", self.judge_key_env)
        for spec in self.endpoints:
            parse_endpoint(spec)
        for name, what in (("max_new_tokens", "tokens"), ("batch_size", "questions"), ("judge_max_tokens", "tokens"),
                           ("limit", "questions")):
            _positive(name, getattr(self, name), what)
        if self.temperature < 0:
            raise ValueError(f"temperature: must be 0 (greedy) or more, got {self.temperature}")
        if self.parse_retries < 0:
            raise ValueError(f"parse_retries: must be >= 0, got {self.parse_retries}")


@dataclass
class JudgeConfig(JudgeSection):
    """`kotune eval judge MODEL OTHER... --judge-url URL --judge-model NAME`."""

    models: list[str] = opt(help="contestants: kotune model folders (answers generated here, by kotune's engine) "
                                 "or endpoints as MODEL@URL[@KEY_ENV]; the first is compared with each other one", kw_only=True)
    out: str | None = opt(None, "folder for answers, judgments, judge.json, judge.md and judge.png (default "
                                "runs/eval/<first model>)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for spec in self.models:
            if is_endpoint(spec):
                parse_endpoint(spec)
        every = [*self.models, *self.endpoints]
        repeated = sorted({m for m in every if every.count(m) > 1})
        if repeated:
            raise ValueError(f"models: {', '.join(repeated)} given twice; list each contestant once")
        if len(every) < 2:
            raise ValueError("models: judging needs at least two contestants (models and --endpoint together)")
