"""The options of `kotune eval kobest` and `kotune eval generate`, and of the pipeline's evaluation sections.

A pipeline section is the command's options without the models and the output folder (the pipeline sets those:
the final model, every earlier one as a baseline, `run_dir/eval`); the command's config adds them. Light on
imports: the CLI builds its flags from these classes and `kotune --help` must not load torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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
class KobestSection(ModelOptions):
    """The pipeline's `eval_kobest` section: KoBEST through lm-eval, on the base model and every trained stage."""

    tasks: list[str] = opt(list(TASKS), "KoBEST tasks, of boolq,copa,wic,hellaswag,sentineg, or all", cli="comma")
    shots: list[int] = opt([0], "few-shot counts, one run each, e.g. 0,5,10", cli="comma")
    limit: int | None = opt(None, "score only the first N test documents per task (quick checks; not comparable "
                                  "with published numbers)")
    batch_size: int | str = opt(8, "lm-eval batch size, or auto")
    data_dir: str | None = opt(None, "folder with <task>/{train,validation,test}.jsonl (default: the shipped "
                                     "KoBEST v1.0)")

    def __post_init__(self) -> None:
        self.tasks, self.shots = parse_tasks(self.tasks), parse_shots(self.shots)
        self.batch_size = parse_batch_size(self.batch_size)
        _positive("limit", self.limit, "documents")


@dataclass
class KobestConfig(KobestSection, Targets):
    """`kotune eval kobest MODEL`."""


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
