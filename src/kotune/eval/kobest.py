"""KoBEST through lm-evaluation-harness, offline: `kotune eval kobest MODEL`.

lm-eval is the engine (prompts, log-likelihood scoring, metrics); kotune supplies what it cannot get offline and
what people want to see:
- the task definitions in `kobest_tasks/`: lm-eval's own kobest YAMLs with two changes, local data (the KoBEST
  v1.0 files shipped in kotune/resources/kobest/, in the hub's fields) and an f1 entry that does not call the Hub;
- any model kotune can load (model folder, hub id, LoRA adapter folder), handed to lm-eval's HFLM as an object;
- a table per shot count: acc and macro-F1 per task (acc_norm for HellaSwag) and their average, next to
  published reference numbers and to `--baseline` models, in report.md with a chart.

A test (tests/e2e/test_eval_kobest.py) runs lm-eval's bundled kobest YAMLs on the same data and checks the
numbers are equal.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from pathlib import Path

from kotune.common.device import resolve_device, resolve_precision
from kotune.eval.config import KobestConfig
from kotune.eval.kobest_reference import TASKS
from kotune.eval.report import kobest_console_table, write_report
from kotune.eval.runs import (
    KOBEST_JSON,
    default_out_dir,
    unique_labels,
    write_json,
)
from kotune.resources import resource_path

TASKS_DIR = Path(__file__).resolve().parent / "kobest_tasks"
DATA_DIR = resource_path("kobest", "v1.0")
SPLITS = ("train", "validation", "test")




# ------------------------------------------------------------------------------------------ lm-eval


def load_task_yaml(path: Path) -> dict:
    """A task YAML of kobest_tasks/ as lm-eval reads it: `!function utils.name` becomes that function of
    kobest_tasks/utils.py (lm-eval resolves it relative to the YAML the same way)."""
    import yaml

    from kotune.eval.kobest_tasks import utils

    def function(loader, node):
        name = loader.construct_scalar(node)
        module, _, attr = name.rpartition(".")
        if module != "utils" or not callable(getattr(utils, attr, None)):
            raise ValueError(f"{path}: !function {name}: kobest_tasks/utils.py has no function {attr!r}")
        return getattr(utils, attr)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", function)
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=Loader)


def task_configs(tasks: Sequence[str], data_dir: str | Path = DATA_DIR) -> list[dict]:
    """lm-eval task configs (dicts, functions resolved) for `tasks`, reading data from `data_dir/<task>/*.jsonl`.

    The YAMLs in kobest_tasks/ name their files relative to the data folder; here they become absolute paths,
    because `datasets` resolves relative ones against the working directory.
    """
    data_dir = Path(data_dir).resolve()
    configs = []
    for task in tasks:
        cfg = load_task_yaml(TASKS_DIR / f"kobest_{task}.yaml")
        files = {split: data_dir / rel for split, rel in cfg["dataset_kwargs"]["data_files"].items()}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"KoBEST data missing: {', '.join(missing)}; point --data-dir at a folder with "
                f"<task>/<split>.jsonl, or rebuild src/kotune/resources/kobest with scripts/convert_kobest.py"
            )
        cfg["dataset_kwargs"] = {**cfg["dataset_kwargs"], "data_files": {s: str(p) for s, p in files.items()}}
        configs.append(cfg)
    return configs


def evaluate_lm(lm, configs: list[dict], *, num_fewshot: int, limit: int | None, log_samples: bool = False) -> dict:
    """One lm-eval run of `configs` with `lm` (an lm-eval LM, e.g. HFLM); returns lm-eval's results dict
    (with every document's prompts and log-likelihoods under "samples" when `log_samples`).

    `include_defaults=False`: only our task configs are loaded, so lm-eval does not index its thousands of
    bundled task YAMLs (seconds per run) and no bundled task can shadow ours.
    """
    import lm_eval.evaluator
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # lm-eval records the git commit of the working directory by running `git describe`, whose "fatal: not a git
    # repository" goes straight to the terminal outside a checkout; the commit of the user's folder says nothing
    # about the scores, so none is recorded.
    lm_eval.evaluator.get_git_commit_hash = lambda: None
    return simple_evaluate(model=lm, tasks=configs, num_fewshot=num_fewshot, limit=limit,
                           task_manager=TaskManager(include_defaults=False), log_samples=log_samples)


def scores_from_results(results: dict, tasks: Sequence[str], shots: int) -> list[dict]:
    """One row per task: {task, shots, n, acc, acc_stderr, acc_norm, f1} from lm-eval's results dict."""
    rows = []
    for task in tasks:
        name = f"kobest_{task}"
        r = results["results"][name]
        rows.append({
            "task": task,
            "shots": shots,
            "n": results.get("n-samples", {}).get(name, {}).get("effective"),
            "acc": r["acc,none"],
            "acc_stderr": _number(r.get("acc_stderr,none")),
            "acc_norm": r.get("acc_norm,none"),
            "f1": r["f1,none"],
        })
    return rows


def _number(value):
    return value if isinstance(value, (int, float)) else None  # lm-eval writes "N/A" where it has no stderr


# ------------------------------------------------------------------------------------------ command


def evaluate_model(path: str, *, tasks: Sequence[str], shots: Sequence[int], configs: list[dict],
                   limit: int | None, batch_size: int | str, device: str, dtype: str, out: Path, label: str,
                   trust_remote_code: bool = False, progress=None) -> list[dict]:
    """Load `path` (model, hub id or LoRA adapter) and run every shot count; writes lm-eval's raw results."""
    from lm_eval.models.huggingface import HFLM

    from kotune.models.load import load_model, load_tokenizer

    model = load_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    rows: list[dict] = []
    for k in shots:
        if progress is not None:
            progress.set_postfix_str(f"{label}, {k}-shot")
        results = evaluate_lm(lm, configs, num_fewshot=k, limit=limit)
        write_json(out / "lm_eval" / f"{label}_{k}shot.json", results)
        rows.extend(scores_from_results(results, tasks, k))
        if progress is not None:
            progress.update()
    del lm, model
    gc.collect()
    return rows


def run(cfg: KobestConfig) -> dict:
    """Evaluate `cfg.model` (and each baseline) on KoBEST; write kobest.json, lm-eval's raw results and report.md.

    Args:
        cfg: the models, tasks, shot counts and loading options (see `KobestConfig` for each field).

    Returns:
        The kobest.json content: {"benchmark", "lm_eval_version", "settings", "models": [{label, path, role, scores}]}.
    """
    from importlib.metadata import version

    from tqdm.auto import tqdm

    tasks, shots, limit, batch_size, baselines = cfg.tasks, cfg.shots, cfg.limit, cfg.batch_size, cfg.baselines
    data_dir = cfg.data_dir or DATA_DIR
    configs = task_configs(tasks, data_dir)  # fails on missing data before any model is loaded
    out = Path(cfg.out) if cfg.out else default_out_dir(cfg.model)
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.dtype, device)
    paths = [cfg.model, *baselines]
    labels = unique_labels(paths)
    started = time.time()
    entries = []
    with tqdm(total=len(paths) * len(shots), desc="KoBEST", unit="run") as bar:
        for path, label, role in zip(paths, labels, ["model"] + ["baseline"] * len(baselines)):
            rows = evaluate_model(path, tasks=tasks, shots=shots, configs=configs, limit=limit, batch_size=batch_size,
                                  device=device, dtype=dtype, out=out, label=label,
                                  trust_remote_code=cfg.trust_remote_code, progress=bar)
            entries.append({"label": label, "path": str(path), "role": role, "scores": rows})
    data = {
        "benchmark": "KoBEST v1.0, test splits",
        "lm_eval_version": version("lm_eval"),
        "settings": {"tasks": tasks, "shots": shots, "limit": limit, "batch_size": batch_size,
                     "data_dir": str(Path(data_dir).resolve()), "device": device, "dtype": dtype,
                     "seconds": round(time.time() - started, 1)},
        "models": entries,
    }
    write_json(out / KOBEST_JSON, data)
    print(kobest_console_table(data))
    report = write_report(out)
    print(f"wrote {out / KOBEST_JSON} and {report}")
    return data
