"""Any lm-evaluation-harness task: `kotune eval lm-eval MODEL --tasks NAMES|DIR`.

`--tasks` takes lm-eval's own task and group names (arc_easy, hellaswag, anli; their data comes from the Hub, so
they need it reachable or cached), folders and files of task YAMLs in lm-eval's format (every YAML in a folder
with a `task:`; `dataset_path: json` with `data_files` reads local JSON Lines, offline, as kotune's KoBEST tasks
do), and task lists (`tasks: [...]` alone in a YAML, e.g. recipes/eval/chatbaker_english.yaml).
Models are run through the same lm-eval invocation as `kotune eval kobest` (`kotune.eval.harness`); every metric
lm-eval reports is kept, per task and shot count, in lm_eval_tasks.json, and report.md shows them beside the
`--baseline` models.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from kotune.eval.config import LmEvalConfig
from kotune.eval.harness import evaluate_lm, evaluate_models, number
from kotune.eval.runs import LM_EVAL_JSON, out_dir, write_json

RAW_DIR = "lm_eval_tasks"  # lm-eval's own results dict of each run, beside kobest's lm_eval/


def folder_tasks(folder: str | Path) -> tuple[list[dict], list[str]]:
    """Every task config in `folder` (searched recursively, in path order), each read by `task_yaml`.

    Returns:
        The task configs, and the YAMLs skipped with why (groups and templates without `task:`).

    Raises:
        ValueError: a YAML lm-eval cannot read (file and reason), or a folder without any task.
    """
    folder = Path(folder)
    configs, skipped = [], []
    for path in sorted(p for p in folder.rglob("*.yaml") if "__pycache__" not in p.parts):
        cfg, why = task_yaml(path)
        if cfg is None:
            skipped.append(f"{path} ({why})")
        else:
            configs.append(cfg)
    if not configs:
        raise ValueError(f"tasks: {folder} holds no task YAML (a .yaml file with `task: NAME`)"
                         + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    return configs, skipped


def task_yaml(path: Path) -> tuple[dict | None, str]:
    """One lm-eval task YAML loaded as lm-eval loads it (`include:` merged, `!function` resolved against the
    YAML's folder) and built once; (None, why) for a group or a template without `task:`.

    A relative `data_files` path that exists beside the YAML is made absolute: `datasets` would resolve it against
    the working directory, so the folder would only work when run from inside it.
    """
    from lm_eval.tasks import TaskManager

    cfg = _read_yaml(path, resolve_func=True, recursive=True)
    if "group" in cfg or not isinstance(cfg.get("task"), str):
        return None, "a group" if "group" in cfg else "no task: key"
    cfg = _local_data_files(cfg, path.parent)
    try:  # built once here, so a bad template or data file fails before any model is loaded (local data: quick)
        TaskManager(include_defaults=False).load([cfg])
    except Exception as e:  # noqa: BLE001 - jinja, datasets and lm-eval's own errors alike: name the file
        raise ValueError(f"{path}: lm-eval cannot build task {cfg['task']}: {type(e).__name__}: {e}") from e
    return cfg, ""


def _read_yaml(path: Path, **how) -> dict:
    """A YAML as lm-eval reads task files (its `!function` tag known), its errors named by file."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        return load_yaml(path, **how)
    except Exception as e:  # noqa: BLE001 - yaml, include and import errors alike: name the file
        raise ValueError(f"{path}: lm-eval cannot load this YAML: {e}") from e


def task_list(path: Path) -> list[str]:
    """The `tasks:` of a kotune task list (recipes/eval/*.yaml): lm-eval names, or folders and files relative to
    the working directory. Raises ValueError when it holds anything else (a setting there would be ignored)."""
    data = _read_yaml(path, resolve_func=False, recursive=False)
    names = data.get("tasks")
    if not isinstance(names, list) or set(data) != {"tasks"} or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: a task list holds only `tasks:`, a list of lm-eval task names or folders "
                         "(give --shots, --limit ... as flags)")
    return names


def _local_data_files(cfg: dict, here: Path) -> dict:
    kwargs = cfg.get("dataset_kwargs") or {}
    files = kwargs.get("data_files")
    if files is None:
        return cfg

    def fix(value):
        if isinstance(value, str):
            beside = here / value
            return str(beside.resolve()) if not Path(value).is_absolute() and beside.exists() else value
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    return {**cfg, "dataset_kwargs": {**kwargs, "data_files": fix(files)}}


def resolve_tasks(spec: list[str]) -> tuple[list, object | None, list[str]]:
    """What lm-eval runs for `--tasks`: a folder becomes its task configs, a YAML file its task config (a task list,
    `tasks: [...]`, its items), anything else is a name lm-eval knows.

    Returns:
        The tasks (configs and names), the TaskManager to run them with (None: no bundled task is named, so none
        is indexed), and the YAMLs skipped in the folders.

    Raises:
        ValueError: a name lm-eval does not know (with the nearest known names), or a folder without tasks.
    """
    tasks, names, skipped, lists = [], [], [], set()
    pending = list(spec)
    while pending:
        item = pending.pop(0)
        path = Path(item)
        if path.is_dir():
            configs, skip = folder_tasks(path)
            tasks += configs
            skipped += skip
        elif path.is_file() and path.suffix in (".yaml", ".yml"):
            if "tasks" in _read_yaml(path, resolve_func=False, recursive=False):
                if path.resolve() in lists:
                    raise ValueError(f"tasks: {path} is read twice (a task list that lists itself, or listed twice)")
                lists.add(path.resolve())
                pending[:0] = task_list(path)
                continue
            cfg, why = task_yaml(path)
            if cfg is None:
                raise ValueError(f"tasks: {path} is {why}, not a task YAML")
            tasks.append(cfg)
        else:
            names.append(item)
    if not names:
        return tasks, None, skipped
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
            raise ValueError(f"tasks: {name!r} is neither a folder, a YAML file nor an lm-eval task, group or tag"
                             + (f"; did you mean {', '.join(close)}?" if close else
                                "; `lm-eval ls tasks` lists them"))
    return tasks + list(dict.fromkeys(names)), manager, skipped


def scores_from_results(results: dict, shots: int) -> list[dict]:
    """One row per task or group lm-eval reported: {task, shots, n, metrics: {name: value}, stderr: {name: value}}.

    lm-eval keys a metric as `<metric>,<filter>`; the filter is dropped when it is `none` and kept in brackets
    otherwise (`exact_match (strict-match)`), so two filters of one metric stay two metrics.
    """
    rows = []
    for task, r in results["results"].items():
        metrics, stderr = {}, {}
        for key, value in r.items():
            metric, sep, filt = key.partition(",")
            if not sep:
                continue  # "alias", "name", "sample_len"
            base = metric.removesuffix("_stderr")
            name = base if filt == "none" else f"{base} ({filt})"
            (stderr if metric.endswith("_stderr") else metrics)[name] = number(value)
        rows.append({"task": task, "shots": shots, "n": results.get("n-samples", {}).get(task, {}).get("effective"),
                     "metrics": {m: v for m, v in metrics.items() if v is not None},
                     "stderr": {m: stderr.get(m) for m in metrics if metrics[m] is not None}})
    return rows


def run(cfg: LmEvalConfig) -> dict:
    """Evaluate `cfg.model` (and each baseline) on `cfg.tasks`; write lm_eval_tasks.json and lm-eval's raw results.
    Printing the tables and writing report.md are the caller's (`kotune.eval.commands`, the pipeline).

    Returns:
        The lm_eval_tasks.json content: {"benchmark", "lm_eval_version", "settings", "models": [{label, path, role,
        scores}]}, a score being a `scores_from_results` row.
    """
    from importlib.metadata import version

    tasks, manager, skipped = resolve_tasks(cfg.tasks)  # fails on a bad name or folder before any model is loaded
    out = out_dir(cfg)
    entries, ran = evaluate_models(
        cfg, run_once=lambda lm, k: evaluate_lm(lm, tasks, num_fewshot=k, limit=cfg.limit, task_manager=manager),
        scores=scores_from_results, raw_dir=out / RAW_DIR, desc="lm-eval")
    data = {
        "benchmark": "lm-eval tasks: " + ", ".join(cfg.tasks),
        "lm_eval_version": version("lm_eval"),
        "settings": {"tasks": cfg.tasks, "shots": cfg.shots, "limit": cfg.limit, "batch_size": cfg.batch_size,
                     "skipped": skipped, **ran},
        "models": entries,
    }
    write_json(out / LM_EVAL_JSON, data)
    return data
