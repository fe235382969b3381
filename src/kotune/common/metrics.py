"""metrics.jsonl (one JSON object per logged step) and PNG curves from it."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLog:
    """Append-only metrics.jsonl; on resume, rows after the resumed step are dropped first."""

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))

    def write(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


PANELS_PER_ROW = 3  # wider rows shrink each panel below what a person can read on a laptop screen


def _series(rows: list[dict], key: str) -> list[tuple[float, float]]:
    return [(r["step"], r[key]) for r in rows
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and math.isfinite(r[key])]


def curve_panels(rows: list[dict], keys: list[str]) -> list[tuple[str, list, list]]:
    """(key, training points, held-out points) for each key with any: the held-out curve is `eval_<key>`."""
    panels = [(key, _series(rows, key), _series(rows, f"eval_{key}")) for key in keys]
    return [panel for panel in panels if panel[1] or panel[2]]


def plot_curves(metrics_path: str | Path, png_path: str | Path, keys: list[str], title: str = "") -> Path:
    """One panel per key in `keys` that the metrics hold, against `step`, at most three panels in a row.

    Where the metrics also hold `eval_<key>` (held-out rows, as TRL's trainers log them), it is drawn in the same
    panel as the training curve, so the two read against each other.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = curve_panels(read_metrics(metrics_path), keys)
    cols = min(max(len(panels), 1), PANELS_PER_ROW)
    n_rows = max(math.ceil(len(panels) / cols), 1)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.6 * cols, 3.3 * n_rows + (0.4 if title else 0)), squeeze=False)
    for ax, (key, train, held_out) in zip(axes.flat, panels):
        if train:
            ax.plot([p[0] for p in train], [p[1] for p in train], lw=1.2, label="train")
        if held_out:  # markers: often a point or a few (one evaluation at the end, or every eval_steps)
            ax.plot([p[0] for p in held_out], [p[1] for p in held_out], "o-", ms=4, lw=1.2, label="held-out")
            ax.legend(fontsize=8)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, not 2.5
        ax.set_title(key)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)  # the unused places of the last row
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)
