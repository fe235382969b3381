"""From the two verdicts on each question to win / tie / loss, win rates with 95% intervals, a table and a chart.

Each question is judged twice per pair, once with each contestant shown first. Read from the first contestant's
side, the question is a win only when both orders say so (likewise a loss); two verdicts that disagree, the
position bias showing, count as a tie (FastChat's rule). A question whose judgment could not be read in either
order is "unparsed", one whose request failed is "failed": both are shown and left out of the win rate, never
guessed. The win rate is the mean of per-question scores 1 / 0.5 / 0 with a seeded bootstrap interval.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kotune.common.stats import mean_interval

OUTCOMES = ("win", "tie", "loss", "unparsed", "failed")
SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}
FAILED = "failed"  # a verdict slot whose request failed after all retries


def outcome(first_shown_first: str | None, second_shown_first: str | None) -> tuple[str, bool]:
    """The first contestant's outcome from the verdict with it as A and the verdict with it as B.

    Returns:
        (outcome, inconsistent): inconsistent is True when both verdicts were read and disagree.
    """
    if FAILED in (first_shown_first, second_shown_first):
        return "failed", False
    if first_shown_first is None or second_shown_first is None:
        return "unparsed", False
    one = {"A": "win", "B": "loss", "tie": "tie"}[first_shown_first]
    two = {"A": "loss", "B": "win", "tie": "tie"}[second_shown_first]
    return (one, False) if one == two else ("tie", True)


def _tally(rows: list[dict], seed: int) -> dict:
    counts = Counter(r["outcome"] for r in rows)
    scores = [SCORE[r["outcome"]] for r in rows if r["outcome"] in SCORE]
    return {**{k: counts.get(k, 0) for k in OUTCOMES}, "questions": len(rows),
            "inconsistent": sum(r["inconsistent"] for r in rows),
            "win_rate": mean_interval(scores, seed) if scores else None}


def summarize(rows: list[dict], seed: int = 0) -> list[dict]:
    """Per pair (in first-seen order): the tally overall and per category.

    Args:
        rows: one per (pair, question): {model, opponent, category, outcome, inconsistent, verdicts}.
    """
    pairs = list(dict.fromkeys((r["model"], r["opponent"]) for r in rows))
    out = []
    for model, opponent in pairs:
        mine = [r for r in rows if (r["model"], r["opponent"]) == (model, opponent)]
        categories = list(dict.fromkeys(r["category"] for r in mine))
        verdicts = [v for r in mine for v in r["verdicts"] if v in ("A", "B")]
        out.append({"model": model, "opponent": opponent, **_tally(mine, seed),
                    # position bias: of the decided verdicts, the share that went to whichever answer was shown first
                    "first_shown_share": verdicts.count("A") / len(verdicts) if verdicts else None,
                    "categories": {c: _tally([r for r in mine if r["category"] == c], seed) for c in categories}})
    return out


def _rate(t: dict) -> str:
    w = t["win_rate"]
    return "—" if w is None else f"{w['value']:.1%} [{w['low']:.1%}, {w['high']:.1%}]"


def _decided(t: dict) -> int:
    return t["win_rate"]["n"] if t["win_rate"] else 0


def markdown(results: dict) -> str:
    """judge.md: the settings, a table per pair overall, and win rates per category."""
    s = results["settings"]
    lines = ["# Pairwise judging", "",
             f"Judge `{s['judge_model']}` ({s['judge_url']}), prompt {s['prompt_version']}; {s['n_questions']} questions "
             f"from `{s['questions']}`. Each pair judged in both orders; disagreeing orders count as a tie; unparsed "
             "and failed judgments are shown and left out of the win rate (95% bootstrap interval).", "",
             "| model | opponent | questions | win | tie | loss | unparsed | failed | inconsistent | first-shown share | "
             "win rate [95% CI] |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in results["pairs"]:
        share = "—" if p["first_shown_share"] is None else f"{p['first_shown_share']:.0%}"
        lines.append(f"| {p['model']} | {p['opponent']} | {p['questions']} | {p['win']} | {p['tie']} | {p['loss']} | "
                     f"{p['unparsed']} | {p['failed']} | {p['inconsistent']} | {share} | {_rate(p)} |")
    categories = list(dict.fromkeys(c for p in results["pairs"] for c in p["categories"]))
    if results["pairs"] and categories:
        lines += ["", "Win rate per category (model vs opponent):", "",
                  "| category | " + " | ".join(f"{p['model']} vs {p['opponent']}" for p in results["pairs"]) + " |",
                  "|---|" + "---|" * len(results["pairs"])]
        for c in categories:
            cells = [f"{_rate(t)} ({_decided(t)} of {t['questions']} decided)" if (t := p["categories"].get(c))
                     else "—" for p in results["pairs"]]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if any(p["unparsed"] for p in results["pairs"]):
        lines += ["", "Unparsed: the judge's reply held no single verdict ([[A]], [[B]] or [[C]]) after "
                  f"{s['parse_retries']} retries; see judgments.jsonl."]
    lines += ["", "![win rates](judge.png)", ""]
    return "\n".join(lines)


def plot(results: dict, png: Path) -> Path:
    """One panel per pair: win rate overall and per category with its interval; the 50% line is a draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = results["pairs"] or [{"model": "?", "opponent": "?", "win_rate": None, "categories": {}}]
    fig, axes = plt.subplots(len(pairs), 1, figsize=(8, 2.8 * len(pairs)), squeeze=False)
    for ax, p in zip(axes[:, 0], pairs):
        rows = [("overall", p)] + list(p["categories"].items())
        labels, values, low, high = [], [], [], []
        for name, t in rows:
            w = t["win_rate"]
            labels.append(name)
            values.append(w["value"] if w else 0.0)
            low.append(w["value"] - w["low"] if w else 0.0)
            high.append(w["high"] - w["value"] if w else 0.0)
        ax.bar(range(len(rows)), values, yerr=[low, high], capsize=3,
               color=["tab:blue"] + ["tab:gray"] * (len(rows) - 1))
        for i, (_, t) in enumerate(rows):
            if t["win_rate"] is None:  # no question decided: say so, a bar at 0 would read as all lost
                ax.text(i, 0.02, "no verdict", ha="center", fontsize=7, rotation=90)
        ax.axhline(0.5, color="black", lw=0.8, ls="--")
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("win rate")
        ax.set_title(f"{p['model']} vs {p['opponent']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
