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

from collections.abc import Sequence
from pathlib import Path

from kotune.eval.config import KobestConfig
from kotune.eval.harness import evaluate_lm, evaluate_models, number
from kotune.eval.kobest_reference import TASKS
from kotune.eval.runs import KOBEST_JSON, out_dir, write_json
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
            "acc_stderr": number(r.get("acc_stderr,none")),
            "acc_norm": r.get("acc_norm,none"),
            "f1": r["f1,none"],
        })
    return rows


# ------------------------------------------------------------------------------------------ command


def run(cfg: KobestConfig) -> dict:
    """Evaluate `cfg.model` (and each baseline) on KoBEST; write kobest.json and lm-eval's raw results.
    Printing the tables and writing report.md are the caller's (`kotune.eval.commands`, the pipeline).

    Args:
        cfg: the models, tasks, shot counts and loading options (see `KobestConfig` for each field).

    Returns:
        The kobest.json content: {"benchmark", "lm_eval_version", "settings", "models": [{label, path, role, scores}]}.
    """
    from importlib.metadata import version

    data_dir = cfg.data_dir or DATA_DIR
    configs = task_configs(cfg.tasks, data_dir)  # fails on missing data before any model is loaded
    out = out_dir(cfg)
    entries, ran = evaluate_models(
        cfg, run_once=lambda lm, k: evaluate_lm(lm, configs, num_fewshot=k, limit=cfg.limit),
        scores=lambda results, k: scores_from_results(results, cfg.tasks, k), raw_dir=out / "lm_eval", desc="KoBEST")
    data = {
        "benchmark": "KoBEST v1.0, test splits",
        "lm_eval_version": version("lm_eval"),
        "settings": {"tasks": cfg.tasks, "shots": cfg.shots, "limit": cfg.limit, "batch_size": cfg.batch_size,
                     "data_dir": str(Path(data_dir).resolve()), "device": ran["device"], "dtype": ran["dtype"],
                     "seconds": ran["seconds"]},
        "models": entries,
    }
    write_json(out / KOBEST_JSON, data)
    return data
