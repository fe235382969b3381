"""Where evaluation results live, and the small things every eval command shares (model labels, dtype, devices).

An output folder collects what `kotune eval kobest`, `eval lm-eval` and `eval generate` wrote (each command rewrites only
its own files), and `report.md` is rebuilt from all of them after each command:

    <out>/kobest.json           scores per model, task and shot count (KOBEST_JSON)
    <out>/lm_eval/*.json        lm-eval's own results dict of every KoBEST run, for tracing a number back
    <out>/lm_eval_tasks.json    `eval lm-eval`: every metric per model, task and shot count (LM_EVAL_JSON)
    <out>/lm_eval_tasks/*.json  lm-eval's own results dict of every `eval lm-eval` run
    <out>/generations.jsonl     every generated reply with its checks (GENERATIONS_JSONL)
    <out>/generation.json       totals per model and the settings used (GENERATION_JSON)
    <out>/report.md, *.png      the report
"""

from __future__ import annotations

import json
import re
from pathlib import Path

KOBEST_JSON = "kobest.json"
LM_EVAL_JSON = "lm_eval_tasks.json"
GENERATION_JSON = "generation.json"
GENERATIONS_JSONL = "generations.jsonl"
REPORT_MD = "report.md"


def model_label(path: str) -> str:
    """A short name for a model: its folder name, or a hub id's last part (`EleutherAI/polyglot-ko-1.3b` ->
    `polyglot-ko-1.3b`)."""
    return Path(str(path).rstrip("/")).name or str(path)


def unique_labels(paths: list[str]) -> list[str]:
    """`model_label` of each path, with `-2`, `-3`... added where two would read the same (`run1/final`, `run2/final`)."""
    labels: list[str] = []
    for p in paths:
        label, n = model_label(p), 2
        while label in labels:
            label = f"{model_label(p)}-{n}"
            n += 1
        labels.append(label)
    return labels


def default_out_dir(model: str) -> Path:
    """`runs/eval/<label>`: runs/ is where kotune writes outputs (and is ignored by git)."""
    return Path("runs") / "eval" / re.sub(r"[^\w.-]+", "_", model_label(model))


def out_dir(cfg) -> Path:
    """The folder an eval command writes to: `cfg.out`, or `default_out_dir(cfg.model)`."""
    return Path(cfg.out) if cfg.out else default_out_dir(cfg.model)


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
