"""The pipeline's report.md: what ran, on which data, how training went, and how the models compare.

Built from the files the stages leave (data_report.json, *_report.json, eval.json, loss/curve PNGs and the
evaluation's own report), so it can be rewritten at any time without rerunning anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

import yaml

from kotune.common.outputs import DATA_REPORT_JSON, EVAL_JSON, METRICS_JSONL, STAGE_CURVES, STAGE_REPORTS
from kotune.config import to_dict


class StageRun(NamedTuple):
    """One stage's run as the report shows it: ran in this invocation, or reused from an earlier one."""

    seconds: float
    finished: str | None  # ISO date and time (UTC) it completed
    reused: bool


def _ran(run: StageRun | None) -> str:
    if run is None:
        return "?"
    when = f"{run.finished[:10]} {run.finished[11:16]} UTC" if run.finished else "unknown date"
    return f"reused (ran {when})" if run.reused else f"ran in this invocation ({when})"


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _data_section(run_dir: Path) -> list[str]:
    lines = ["## Data", ""]
    check = run_dir / "check" / "check.txt"
    if check.is_file():
        lines += ["`kotune data check`:", "", "```", *check.read_text(encoding="utf-8").splitlines()[:30], "```", ""]
    report = _read(run_dir / "sft" / DATA_REPORT_JSON)
    if report:
        s = report["stats"]
        lines += [
            f"SFT data ({report.get('template', '?')} template, {report.get('batching', '?')} batches):", "",
            "| examples | tokens | trained tokens | trained fraction | truncated | labels hold EOS | skipped records |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {s['examples']:,} | {s['tokens']:,} | {s['trained_tokens']:,} | {s['trained_fraction']:.1%} | "
            f"{s['truncated']:,} | {s['with_eos']:,} | {len(report['skipped_records']) + len(report['skipped_without_trained_tokens']):,} |",
            "",
        ]
        held = report.get("held_out")
        if held:
            where = ("data.eval_files" if held.get("from") == "eval_files"
                     else f"eval_fraction {held.get('eval_fraction')} of the prompts, seed {held.get('seed')}")
            lines += [f"Held out from training: {held['examples']:,} example(s), {held['trained_tokens']:,} trained tokens "
                      f"({where})." if held["examples"] else f"Held out from training: none ({held.get('none', '?')}).", ""]
        skipped = report["skipped_records"] + [f"{x}: no trained token left after truncation" for x in report["skipped_without_trained_tokens"]]
        if skipped:
            lines += ["Skipped records (each with its reason):", "", *[f"- `{x}`" for x in skipped[:20]]]
            lines += [f"- … and {len(skipped) - 20} more (see sft/{DATA_REPORT_JSON})"] if len(skipped) > 20 else []
            lines.append("")
    for stage, name in STAGE_REPORTS.items():
        data = _read(run_dir / stage / name)
        if data and isinstance(data.get("data"), dict):
            counts = ", ".join(f"{k}: {v}" for k, v in data["data"].items() if isinstance(v, (int, float, str)))
            lines += [f"{stage} data: {counts}", ""]
    return lines


def _training_section(run_dir: Path, models: list) -> list[str]:
    lines = ["## Training", ""]
    evaluation = _read(run_dir / "pretrain" / EVAL_JSON)
    if evaluation:
        before = evaluation.get("perplexity_before")
        lines += [f"Pre-training: held-out perplexity {evaluation['perplexity']:,.2f}"
                  + (f" (random init: {before:,.2f})" if before else "")
                  + f" over {evaluation['eval_tokens']:,} held-out tokens, {evaluation['parameters'] / 1e6:,.1f}M parameters.", ""]
    for stage, png in STAGE_CURVES.items():
        if (run_dir / stage / png).is_file():
            lines += [f"### {stage}", "", f"![{stage} curves]({stage}/{png})", ""]
            metrics = run_dir / stage / METRICS_JSONL
            if metrics.is_file():
                rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
                rows = [r for r in rows if "loss" in r]  # training rows: TRL logs held-out eval_* rows among them
                if rows:
                    lines += [f"loss: {rows[0]['loss']:.4f} at step {rows[0]['step']} → {rows[-1]['loss']:.4f} at step "
                              f"{rows[-1]['step']}", ""]
            if stage == "sft":
                lines += _sft_held_out(run_dir)
    return lines


def _interval(f: dict, spec: str) -> str:
    """`value [low, high]` of a `kotune.common.stats` figure, each number formatted with `spec`."""
    return f"{f['value']:{spec}} [{f['low']:{spec}}, {f['high']:{spec}}]"


def _sft_held_out(run_dir: Path) -> list[str]:
    """Held-out response loss of the model SFT started from and of the SFT model, with 95% intervals, and a plain
    sentence on whether SFT changed it."""
    report = _read(run_dir / "sft" / STAGE_REPORTS["sft"])
    held = (report or {}).get("held_out")
    if not held:
        return []
    if "after" not in held:
        return [f"SFT held-out loss: not measured ({held.get('none', 'no held-out examples')}).", ""]
    lines = [f"Held-out response loss (trained tokens only) on {held['examples']:,} example(s), "
             f"{held['after']['tokens']:,} tokens; 95% bootstrap intervals over examples:", "",
             "| model | loss | perplexity |", "|---|---:|---:|"]
    if "before" in held:
        lines.append(f"| before SFT (the model it started from) | {_interval(held['before']['loss'], ',.4f')} | "
                     f"{_interval(held['before']['perplexity'], ',.2f')} |")
    lines.append(f"| after SFT | {_interval(held['after']['loss'], ',.4f')} | "
                 f"{_interval(held['after']['perplexity'], ',.2f')} |")
    if "change" not in held:
        return lines + ["", "The starting model's held-out loss was not recorded, so no change can be shown.", ""]
    change = held["change"]
    lines.append(f"| change (paired, per example) | {_interval(change, '+.4f')} | |")
    if not change["changed"]:
        verdict = "SFT changed nothing measurable in held-out response loss: the change's 95% interval holds 0."
    elif change["value"] < 0:
        verdict = "SFT lowered held-out response loss: the change's 95% interval lies below 0."
    else:
        verdict = "SFT raised held-out response loss (worse on unseen prompts): the change's 95% interval lies above 0."
    return lines + ["", verdict, ""]


# How each preference stage's held-out figures read in the report (`kotune.preference.heldout`).
FIGURE_NAMES = {
    "reward": {"accuracy": "pairwise accuracy", "margin": "score margin (chosen - rejected)"},
    "dpo": {"accuracy": "preference accuracy", "margin": "log-prob margin (chosen - rejected)",
            "chosen_logprob": "chosen reply log-prob"},
    "ppo": {"reward": "reward-model score", "kl": "KL to the reference (sum over the reply)"},
}
HELDOUT_UNITS = {"reward": "pairs", "dpo": "pairs", "ppo": "prompts"}


def _heldout_section(run_dir: Path) -> list[str]:
    """Each preference stage's held-out figures before and after, with 95% intervals, and a plain verdict."""
    lines = []
    for stage in (s for s in STAGE_REPORTS if s in FIGURE_NAMES):  # pipeline order; SFT has its own table
        report = _read(run_dir / stage / STAGE_REPORTS[stage])
        if report is None:
            continue
        lines += [f"### {stage}: held-out evaluation", ""]
        heldout = report.get("heldout")
        if not heldout:
            lines += [f"No held-out {HELDOUT_UNITS[stage]} (data.eval_fraction 0 and no data.eval_files): nothing was "
                      "measured on examples the stage did not train on.", ""]
            continue
        names = FIGURE_NAMES[stage]
        lines += [f"{heldout['examples']:,} held-out {HELDOUT_UNITS[stage]}; before = `{heldout['before_is']}`. "
                  "Means with 95% bootstrap intervals; the difference is paired, on the same examples.", "",
                  "| figure | before | after | after - before | |", "|---|---:|---:|---:|---|"]
        for key, f in heldout["figures"].items():
            verdict = "changed" if f["difference"]["changed"] else "no measurable change"
            lines.append(f"| {names.get(key, key)} | {_interval(f['before'], '.3f')} | "
                         f"{_interval(f['after'], '.3f')} | {_interval(f['difference'], '+.3f')} | {verdict} |")
        changed = [names.get(k, k) for k, f in heldout["figures"].items() if f["difference"]["changed"]]
        accuracy = heldout["figures"].get("accuracy")
        if stage == "dpo" and accuracy:  # the figure DPO is run for: is it above the reference's (the SFT model's)?
            d = accuracy["difference"]
            verdict = "rose above" if d["low"] > 0 else "fell below" if d["high"] < 0 else "did not measurably differ from"
            lines += ["", f"Held-out preference accuracy {verdict}"
                          f" the starting model's ({accuracy['before']['value']:.3f} → {accuracy['after']['value']:.3f}, "
                          f"difference 95% [{d['low']:+.3f}, {d['high']:+.3f}])."]
        lines += ["", f"**{stage} changed nothing measurable on its held-out {HELDOUT_UNITS[stage]}**: every "
                      "difference's 95% interval contains 0." if not changed else
                  f"Measurable change (interval of the difference excludes 0): {', '.join(changed)}.", ""]
    return ["## Held-out evaluation of the preference stages", "", *lines] if lines else []


def _evaluation_section(run_dir: Path) -> list[str]:
    report = run_dir / "eval" / "report.md"
    if not report.is_file():
        return []
    body = report.read_text(encoding="utf-8").split("\n", 1)[-1]  # drop its title
    body = re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M)  # one level deeper under "Evaluation"
    body = re.sub(r"\]\((?!https?:|#)([^)]+)\)", r"](eval/\1)", body)  # its images live in eval/
    return ["## Evaluation", "", body.strip(), ""]


def _judging_section(run_dir: Path) -> list[str]:
    """`kotune eval judge`'s tables (eval/judge.md), under the evaluation."""
    report = run_dir / "eval" / "judge.md"
    if not report.is_file():
        return []
    body = report.read_text(encoding="utf-8").split("\n", 1)[-1]
    body = re.sub(r"\]\((?!https?:|#)([^)]+)\)", r"](eval/\1)", body)
    return ["## Pairwise judging", "", body.strip(), ""]


def write_pipeline_report(run_dir: Path, cfg, models: list, runs: dict[str, StageRun]) -> Path:
    """Write `run_dir/report.md` and return its path; `runs` says per stage when it ran and whether it was reused."""
    final = models[-1][1]
    lines = [
        "# kotune pipeline report", "",
        f"Final model: `{final}`. Chat with it: `kotune chat {run_dir}`; serve it: `kotune serve {run_dir}`.", "",
        "| stage | output | ran | seconds |", "|---|---|---|---:|",
        *[f"| {stage} | `{run_dir / ('eval' if stage.startswith('eval_') else stage)}` | {_ran(runs.get(stage))} | "
          f"{runs[stage].seconds if stage in runs else 0:,.0f} |" for stage in cfg.stages()],
        "", "Models, in order: " + " → ".join(f"{name} (`{path}`)" for name, path in models), "",
    ]
    lines += _data_section(run_dir) + _training_section(run_dir, models) + _heldout_section(run_dir)
    lines += _evaluation_section(run_dir) + _judging_section(run_dir)
    lines += ["## Configuration", "", "```yaml", yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=False).strip(), "```", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
