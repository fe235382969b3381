"""KoBEST's tasks and published scores: read by kobest.py and report.py, importing neither (no cycle)."""

from __future__ import annotations

from dataclasses import dataclass, field

TASKS = ("boolq", "copa", "wic", "hellaswag", "sentineg")
TASK_TITLES = {"boolq": "BoolQ", "copa": "COPA", "wic": "WiC", "hellaswag": "HellaSwag", "sentineg": "SentiNeg"}


@dataclass(frozen=True)
class Reference:
    """Published KoBEST scores of a model, shown beside ours; `acc` holds acc_norm for HellaSwag."""

    label: str
    source: str
    shots: int
    f1: dict[str, float]
    acc: dict[str, float] = field(default_factory=dict)


REFERENCES: tuple[Reference, ...] = (
    Reference(
        label="polyglot-ko-1.3b (published)",
        source="EleutherAI/polyglot-ko-1.3b, 0-shot, lm-evaluation-harness (polyglot branch), KoBEST test splits; "
        "results table posted in lm-evaluation-harness PR #1263 \"add Kobest\" "
        "(https://github.com/EleutherAI/lm-evaluation-harness/pull/1263)",
        shots=0,
        f1={"boolq": 0.3549, "copa": 0.7114, "wic": 0.3273, "hellaswag": 0.4013, "sentineg": 0.6825},
        acc={"boolq": 0.4979, "copa": 0.7120, "wic": 0.4865, "hellaswag": 0.5320, "sentineg": 0.6927},
    ),
    Reference(
        label="42dot LLM-PLM-1.3B (published)",
        source="42dot/42dot_LLM-PLM-1.3B model card, \"Zero-shot evaluations\", KoBEST macro-F1 "
        "(https://huggingface.co/42dot/42dot_LLM-PLM-1.3B); no WiC score published",
        shots=0,
        f1={"boolq": 0.369, "copa": 0.704, "hellaswag": 0.431, "sentineg": 0.690},
    ),
)


def headline_acc(row: dict) -> float:
    """The accuracy people quote for a task: acc_norm for HellaSwag (length-normalised), acc elsewhere."""
    return row["acc_norm"] if row["task"] == "hellaswag" and row.get("acc_norm") is not None else row["acc"]
