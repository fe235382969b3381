"""kotune's kobest task YAMLs against lm-eval's bundled ones: same prompts, choices and targets on real documents,
local data, an f1 metric that never calls the Hub. (Scores are compared end to end in tests/e2e/test_eval_kobest.py.)"""

import json
from pathlib import Path

import pytest

from kotune.eval.config import parse_batch_size, parse_shots, parse_tasks
from kotune.eval.kobest import DATA_DIR, TASKS, task_configs

DOCS = 25  # test documents rendered per task


def _bundled(task):
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(lm_eval.tasks.__file__).parent / "kobest" / f"kobest_{task}.yaml", resolve_func=True)


def _render(value, doc):
    """What lm-eval makes of a doc_to_* entry: a function's result, a field's value, a Jinja template, a list."""
    if callable(value):
        return value(doc)
    if isinstance(value, str) and value in doc:  # e.g. HellaSwag's doc_to_choice: "choices"
        return doc[value]
    if isinstance(value, str):
        from lm_eval.utils import apply_template

        return apply_template(value, doc)
    return value


def _docs(task, cfg):
    from datasets import Dataset

    lines = (DATA_DIR / task / "test.jsonl").read_text(encoding="utf-8").splitlines()[:DOCS]
    ds = Dataset.from_list([json.loads(line) for line in lines])
    return list(cfg["process_docs"](ds)) if cfg.get("process_docs") else list(ds)


@pytest.mark.parametrize("task", TASKS)
def test_prompts_choices_and_targets_match_lm_eval(task):
    ours, theirs = task_configs([task])[0], _bundled(task)
    assert ours["task"] == theirs["task"] == f"kobest_{task}"
    for key in ("output_type", "training_split", "validation_split", "test_split"):
        assert ours[key] == theirs[key], key
    docs_ours, docs_theirs = _docs(task, ours), _docs(task, theirs)
    assert docs_ours == docs_theirs
    for doc in docs_ours:
        for key in ("doc_to_text", "doc_to_choice", "doc_to_target"):
            assert _render(ours[key], doc) == _render(theirs[key], doc), (key, doc)


@pytest.mark.parametrize("task", TASKS)
def test_metrics_and_data_are_local(task):
    ours, theirs = task_configs([task])[0], _bundled(task)
    assert [m["metric"] for m in ours["metric_list"]] == [m["metric"] for m in theirs["metric_list"]]
    f1 = next(m for m in ours["metric_list"] if m["metric"] == "f1")
    assert "hf_evaluate" not in f1  # the bundled entry's hf_evaluate: true fetches a metric from the Hub
    pairs = [(0, 0), (1, 1), (1, 0), (0, 0), (1, 1), (0, 1)]  # (gold, pred), as lm-eval passes them
    theirs_f1 = next(m for m in theirs["metric_list"] if m["metric"] == "f1")
    assert f1["aggregation"](pairs) == pytest.approx(theirs_f1["aggregation"](pairs))
    from sklearn.metrics import f1_score

    assert f1["aggregation"](pairs) == pytest.approx(f1_score([g for g, _ in pairs], [p for _, p in pairs], average="macro"))
    assert ours["dataset_path"] == "json"
    files = ours["dataset_kwargs"]["data_files"]
    assert set(files) == {"train", "validation", "test"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in files.values())


def test_missing_data_names_the_files_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"boolq/train.jsonl.*scripts/convert_kobest.py"):
        task_configs(["boolq"], tmp_path)


def test_argument_parsing():
    assert parse_tasks("all") == list(TASKS)
    assert parse_tasks("COPA, kobest_boolq,copa") == ["copa", "boolq"]
    assert parse_shots("0,5,10") == [0, 5, 10]
    assert parse_batch_size("auto") == "auto" and parse_batch_size("4") == 4
    with pytest.raises(ValueError, match="unknown KoBEST task hellaswg; choose from boolq,copa"):
        parse_tasks("boolq,hellaswg")
    with pytest.raises(ValueError, match="shots: "):
        parse_shots("0,five")
    with pytest.raises(ValueError, match="shots: "):
        parse_shots("-1")
    with pytest.raises(ValueError, match="batch_size: "):
        parse_batch_size("0")
