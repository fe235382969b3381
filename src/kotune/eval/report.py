"""report.md and PNG charts from an eval output folder (see `kotune.eval.runs` for what the folder holds).

Every eval command's caller (`kotune.eval.commands`, the pipeline) calls `write_report(out)` after it, so the
report always shows every result in the folder: the KoBEST tables beside the published reference rows and any
baselines, any other lm-eval tasks, the generation checks, and a few sample replies. Tables for the console come
from here too, so the terminal and the report agree.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path

from kotune.eval.kobest_reference import REFERENCES, TASK_TITLES, headline_acc
from kotune.eval.runs import GENERATION_JSON, GENERATIONS_JSONL, KOBEST_JSON, LM_EVAL_JSON, REPORT_MD, read_json

SAMPLE_PROMPTS = 3  # first prompts shown with every model's reply
SAMPLE_LOOPS = 2  # looping replies shown per model
SAMPLE_CHARS = 500


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


# ------------------------------------------------------------------------------------------ KoBEST


def _average(values: list[float | None]) -> float | None:
    """Mean over the tasks run, or None when a row lacks one of them (an average over other tasks misleads)."""
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def kobest_rows(data: dict, shots: int, metric: str) -> list[list[str]]:
    """Table rows for one shot count; `metric` is "f1" or "acc" (acc_norm for HellaSwag). Reference rows join the
    0-shot tables only, since they are 0-shot numbers."""
    tasks = data["settings"]["tasks"]
    rows = []
    for entry in data["models"]:
        by_task = {s["task"]: s for s in entry["scores"] if s["shots"] == shots}
        values = [(headline_acc(by_task[t]) if metric == "acc" else by_task[t]["f1"]) if t in by_task else None
                  for t in tasks]
        name = entry["label"] + (" (baseline)" if entry["role"] == "baseline" else "")
        rows.append([name, *map(_fmt, values), _fmt(_average(values))])
    for ref in REFERENCES:
        scores = ref.f1 if metric == "f1" else ref.acc
        if ref.shots != shots or not scores:
            continue
        values = [scores.get(t) for t in tasks]
        rows.append([ref.label, *map(_fmt, values), _fmt(_average(values))])
    return rows


def _kobest_headers(data: dict) -> list[str]:
    return ["model", *(TASK_TITLES[t] for t in data["settings"]["tasks"]), "avg"]


def limit_note(limit: int | None) -> str | None:
    """What the console and the report say when `--limit` cut the test sets (published rows are on full sets)."""
    if not limit:
        return None
    return (f"Only the first {limit} test documents of each task were scored (`--limit`): these numbers are not "
            "comparable with the published ones.")


def _console(tables: list[str], settings: dict) -> str:
    """The console tables, then the note a `--limit` calls for."""
    note = limit_note(settings.get("limit"))
    return "\n".join([*tables, f"\nnote: {note}"] if note else tables)


def kobest_console_table(data: dict) -> str:
    parts = []
    for k in data["settings"]["shots"]:
        for metric, title in (("f1", "macro-F1"), ("acc", "accuracy (acc_norm for HellaSwag)")):
            parts.append(f"\nKoBEST {k}-shot, {title}\n" + _text_table(_kobest_headers(data), kobest_rows(data, k, metric)))
    return _console(parts, data["settings"])


def kobest_markdown(data: dict, chart: str | None) -> str:
    s = data["settings"]
    lines = ["## KoBEST", ""]
    lines.append(f"{data['benchmark']}, scored by lm-evaluation-harness {data['lm_eval_version']} "
                 f"(log-likelihood of each choice; macro-F1 over the split, acc; acc_norm for HellaSwag). "
                 f"Batch size {s['batch_size']}, {s['dtype']} on {s['device']}. `avg` is the unweighted mean over "
                 f"the tasks in the table (— when a row lacks one).")
    if s.get("limit"):
        lines += ["", f"**{limit_note(s['limit'])}**"]
    for k in s["shots"]:
        lines += ["", f"### {k}-shot macro-F1", "", _md_table(_kobest_headers(data), kobest_rows(data, k, "f1"))]
        lines += ["", f"### {k}-shot accuracy", "", _md_table(_kobest_headers(data), kobest_rows(data, k, "acc"))]
    if 0 in s["shots"]:
        lines += ["", "Reference rows (published numbers, not run here):"]
        lines += [f"- {ref.label}: {ref.source}" for ref in REFERENCES]
    if chart:
        lines += ["", f"![KoBEST macro-F1]({chart})"]
    return "\n".join(lines)


def plot_kobest(data: dict, png: Path) -> Path:
    """Macro-F1 per task (models and, at 0-shot, the references) and, with several shot counts, avg vs shots."""
    plt = _pyplot()
    tasks = data["settings"]["tasks"]
    shots = data["settings"]["shots"]
    first = min(shots)
    series = []
    for entry in data["models"]:
        by_task = {s["task"]: s["f1"] for s in entry["scores"] if s["shots"] == first}
        series.append((entry["label"], [by_task.get(t) for t in tasks], None))
    if first == 0:
        series += [(ref.label, [ref.f1.get(t) for t in tasks], "//") for ref in REFERENCES]
    panels = 2 if len(shots) > 1 else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 + 4 * (panels - 1), 3.8), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(series)
    for i, (label, values, hatch) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(tasks))]
        ys = [v if v is not None else 0.0 for v in values]
        ax.bar(xs, ys, width, label=label, hatch=hatch, alpha=0.6 if hatch else 1.0)
    ax.set_xticks(range(len(tasks)), [TASK_TITLES[t] for t in tasks])
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro-F1")
    ax.set_title(f"KoBEST {first}-shot macro-F1")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    if panels == 2:
        ax2 = axes[0][1]
        for entry in data["models"]:
            avgs = [_average([next((s["f1"] for s in entry["scores"] if s["shots"] == k and s["task"] == t), None)
                              for t in tasks]) for k in shots]
            ax2.plot(shots, [a if a is not None else float("nan") for a in avgs], marker="o", label=entry["label"])
        ax2.set_xticks(shots)
        ax2.set_ylim(0, 1)
        ax2.set_xlabel("shots")
        ax2.set_ylabel("avg macro-F1")
        ax2.set_title("average over tasks")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    return _saved(fig, png)


# ------------------------------------------------------------------------------------------ any lm-eval task


def _model_name(entry: dict) -> str:
    return entry["label"] + (" (baseline)" if entry["role"] == "baseline" else "")


def lm_eval_rows(data: dict, shots: int) -> list[list[str]]:
    """Table rows for one shot count: one per (task, metric) any model has, a column per model (baselines
    after the model), each `value ± lm-eval's standard error`."""
    keys: dict[tuple[str, str], int | None] = {}
    by_model = []
    for entry in data["models"]:
        scores = {s["task"]: s for s in entry["scores"] if s["shots"] == shots}
        by_model.append(scores)
        for task, s in scores.items():
            for metric in s["metrics"]:
                keys.setdefault((task, metric), s["n"])
    rows = []
    for (task, metric), n in keys.items():
        cells = []
        for scores in by_model:
            s = scores.get(task)
            value, se = (s["metrics"].get(metric), s["stderr"].get(metric)) if s else (None, None)
            cells.append(_fmt(value) + (f" ± {se:.3f}" if value is not None and se is not None else ""))
        rows.append([task, metric, "—" if n is None else str(n), *cells])
    return rows


def _lm_eval_headers(data: dict) -> list[str]:
    return ["task", "metric", "n", *map(_model_name, data["models"])]


def lm_eval_console_table(data: dict) -> str:
    parts = [f"\nlm-eval {k}-shot\n" + _text_table(_lm_eval_headers(data), lm_eval_rows(data, k))
             for k in data["settings"]["shots"]]
    if data["settings"].get("skipped"):
        parts.append("\nskipped YAMLs: " + "; ".join(data["settings"]["skipped"]))
    return _console(parts, data["settings"])


def lm_eval_markdown(data: dict, chart: str | None) -> str:
    s = data["settings"]
    lines = ["## lm-eval tasks", "",
             f"{data['benchmark']}, scored by lm-evaluation-harness {data['lm_eval_version']}: every metric it "
             f"reports, `± its standard error` (— where it has none). `n` is the number of documents scored. "
             f"Batch size {s['batch_size']}, {s['dtype']} on {s['device']}."]
    if s.get("limit"):
        lines += ["", f"**{limit_note(s['limit'])}**"]
    if s.get("skipped"):
        lines += ["", "Skipped YAMLs (not tasks): " + "; ".join(f"`{x}`" for x in s["skipped"]) + "."]
    for k in s["shots"]:
        lines += ["", f"### {k}-shot", "", _md_table(_lm_eval_headers(data), lm_eval_rows(data, k))]
    if chart:
        lines += ["", f"![lm-eval tasks]({chart})"]
    return "\n".join(lines)


def headline_metric(metrics: dict) -> str | None:
    """The metric a task's bar shows: acc_norm where lm-eval has it (length-normalised, what HellaSwag, ARC and
    PIQA are usually quoted by), else acc, else the first it reports."""
    return next((m for m in ("acc_norm", "acc") if m in metrics), next(iter(metrics), None))


def plot_lm_eval(data: dict, png: Path) -> Path:
    """The headline metric of each task at the lowest shot count, a bar per model."""
    plt = _pyplot()
    first = min(data["settings"]["shots"])
    scores = [{s["task"]: s["metrics"] for s in e["scores"] if s["shots"] == first} for e in data["models"]]
    tasks = list(dict.fromkeys(t for by_task in scores for t in by_task))
    metric = {t: headline_metric(next(by_task[t] for by_task in scores if t in by_task)) for t in tasks}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(tasks) + 2), 3.8))
    width = 0.8 / len(scores)
    for i, (entry, by_task) in enumerate(zip(data["models"], scores)):
        xs = [j + (i - (len(scores) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [by_task.get(t, {}).get(metric[t]) or 0.0 for t in tasks], width, label=_model_name(entry))
    ax.set_xticks(range(len(tasks)), [f"{t}\n{metric[t]}" for t in tasks], fontsize=7)
    ax.set_title(f"lm-eval {first}-shot")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _saved(fig, png)


# ------------------------------------------------------------------------------------------ generation

GEN_HEADERS = ["model", "prompts", "stop rate", "looping", "mean tokens", "mean chars", "rep-4 (words)",
               "loop score", "distinct-1", "distinct-2"]


def generation_rows(data: dict) -> list[list[str]]:
    rows = []
    for entry in data["models"]:
        s = entry["summary"]
        name = entry["label"] + (" (baseline)" if entry["role"] == "baseline" else "")
        rows.append([name, str(s["n"]), _fmt(s["stop_rate"], 2), f"{s['looping']}/{s['n']}", _fmt(s["mean_tokens"], 1),
                     _fmt(s["mean_chars"], 1), _fmt(s["mean_repeated_4gram_rate"]), _fmt(s["mean_loop_score"]),
                     _fmt(s["distinct_1"]), _fmt(s["distinct_2"])])
    return rows


def generation_console_table(data: dict) -> str:
    lines = ["", "Generation checks", _text_table(GEN_HEADERS, generation_rows(data))]
    for entry in data["models"]:
        if entry["looping_ids"]:
            lines.append(f"{entry['label']}: looping replies: {', '.join(entry['looping_ids'])}")
    return "\n".join(lines)


def _quote(text: str) -> str:
    text = text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + " …"
    return "\n".join("> " + (line or " ") for line in (text or "(empty)").splitlines() or ["(empty)"])


def _prompt_text(row: dict) -> str:
    return row["messages"][-1]["content"].replace("\n", " ")


def generation_markdown(data: dict, rows: list[dict], chart: str | None) -> str:
    s = data["settings"]
    decoding = "greedy" if not s["temperature"] else f"temperature {s['temperature']}"
    rule = s["loop_rule"]
    lines = ["## Generation checks", "",
             f"{s['n_prompts']} prompts from `{s['prompts']}`, {decoding}, at most {s['max_new_tokens']} new tokens. "
             f"**stop rate**: share of replies that ended with EOS before the limit. **looping**: replies whose "
             f"repeated character {rule['char_n']}-grams make up at least {rule['char_rate']:.0%} of them (loop "
             f"score). **rep-4**: share of repeated word 4-grams, averaged over replies. **distinct-n**: unique / all "
             f"word n-grams, pooled over all replies.", "",
             _md_table(GEN_HEADERS, generation_rows(data))]
    for entry in data["models"]:
        if entry.get("template_note"):
            lines += ["", f"Note ({entry['label']}): {entry['template_note']}."]
        if entry["looping_ids"]:
            lines += ["", f"Looping replies of {entry['label']}: {', '.join(entry['looping_ids'])}."]
    if chart:
        lines += ["", f"![generation checks]({chart})"]
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    lines += ["", "### Sample replies"]
    shown = [r["id"] for r in next(iter(by_model.values()), [])[:SAMPLE_PROMPTS]]
    for label, model_rows in by_model.items():
        shown += [r["id"] for r in model_rows if r["looping"] and r["id"] not in shown][:SAMPLE_LOOPS]
    for pid in shown:
        replies = [(label, next(r for r in model_rows if r["id"] == pid)) for label, model_rows in by_model.items()
                   if any(r["id"] == pid for r in model_rows)]
        lines += ["", f"#### {pid}: {_prompt_text(replies[0][1])}"]
        for label, r in replies:
            state = ("stopped" if r["stopped"] else "hit the limit") + (", LOOPING" if r["looping"] else "")
            lines += ["", f"**{label}** ({r['n_tokens']} tokens, {state}):", "", _quote(r["output"])]
    for label, model_rows in by_model.items():
        table = [[r["id"], r.get("category") or "", "yes" if r["stopped"] else "no", r["n_tokens"], r["n_chars"],
                  _fmt(r["repeated_4gram_rate"]), _fmt(r["loop_score"]), _fmt(r["distinct_1"]), _fmt(r["distinct_2"]),
                  "LOOP" if r["looping"] else ""] for r in model_rows]
        lines += ["", f"<details><summary>Per prompt: {label}</summary>", "",
                  _md_table(["id", "category", "stopped", "tokens", "chars", "rep-4", "loop score", "distinct-1",
                             "distinct-2", "loop"], table), "", "</details>"]
    return "\n".join(lines)


def plot_generation(data: dict, png: Path) -> Path:
    """Stop rate, loop rate, repetition and distinct-n per model, as grouped bars on one 0-1 scale."""
    plt = _pyplot()
    metrics = [("stop rate", "stop_rate"), ("loop rate", "loop_rate"), ("rep-4", "mean_repeated_4gram_rate"),
               ("loop score", "mean_loop_score"), ("distinct-1", "distinct_1"), ("distinct-2", "distinct_2")]
    models = data["models"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(models)
    for i, entry in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(xs, [entry["summary"][key] or 0.0 for _, key in metrics], width, label=entry["label"])
    ax.set_xticks(range(len(metrics)), [name for name, _ in metrics])
    ax.set_ylim(0, 1)
    ax.set_title("generation checks (stop rate, distinct-n: higher is better; loop, rep: lower)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _saved(fig, png)


# ------------------------------------------------------------------------------------------ report


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _saved(fig, png: Path) -> Path:
    """Write a chart at the report's one resolution and close it (pyplot keeps every open figure until then)."""
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    _pyplot().close(fig)
    return png


def write_report(out: str | Path) -> Path:
    """(Re)write `out/report.md` and its charts from the results in `out`; returns the report's path.

    Raises:
        FileNotFoundError: when `out` holds neither kobest.json nor generation.json.
    """
    out = Path(out)
    kobest = read_json(out / KOBEST_JSON)
    tasks = read_json(out / LM_EVAL_JSON)
    generation = read_json(out / GENERATION_JSON)
    if kobest is None and tasks is None and generation is None:
        raise FileNotFoundError(f"{out} has no {KOBEST_JSON}, {LM_EVAL_JSON} or {GENERATION_JSON}; run `kotune eval "
                                f"kobest`, `kotune eval lm-eval` or `kotune eval generate` with --out {out} first")
    from kotune import __version__

    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = ["# kotune evaluation report", "", f"Written {now} by kotune {__version__}."]
    models = {e["label"]: e["path"] for d in (kobest, tasks, generation) if d for e in d["models"]}
    sections += ["", "Models: " + "; ".join(f"**{label}** = `{path}`" for label, path in models.items()) + "."]
    if kobest is not None:
        sections += ["", kobest_markdown(kobest, plot_kobest(kobest, out / "kobest.png").name)]
    if tasks is not None:
        sections += ["", lm_eval_markdown(tasks, plot_lm_eval(tasks, out / "lm_eval_tasks.png").name)]
    if generation is not None:
        path = out / GENERATIONS_JSONL
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
        sections += ["", generation_markdown(generation, rows, plot_generation(generation, out / "generation.png").name)]
    report = out / REPORT_MD
    report.write_text("\n".join(sections) + "\n", encoding="utf-8")
    return report
