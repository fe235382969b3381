"""`kotune eval lm-eval`'s task resolution, score reading and report tables, without a model. (Scores against
lm-eval run directly: tests/e2e/test_eval_lm_eval_cli.py.)"""

import json
from pathlib import Path

import pytest

from kotune_test_paths import REPO
from kotune.config import ConfigError, load_config
from kotune.eval.config import LmEvalConfig, LmEvalSection
from kotune.eval.lm_tasks import resolve_tasks, scores_from_results, task_list
from kotune.eval.report import lm_eval_console_table, lm_eval_markdown, write_report
from kotune.eval.runs import LM_EVAL_JSON

CHATBAKER = REPO / "recipes" / "eval" / "chatbaker_english.yaml"
TASK = ("task: t1\ndataset_path: json\ndataset_kwargs: {data_files: {test: d/test.jsonl}}\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{q}}'\ndoc_to_choice: [a, b]\n"
        "doc_to_target: label\n")


@pytest.fixture(scope="module")
def manager():
    """lm-eval's task index over the folders of the installed lm_eval/tasks that define a task of the ChatBaker
    list. The full index parses ~14,000 YAMLs (20-40 s here); a plain text search picks the folders first, and the
    index built from them still decides whether a name is a task (a renamed task is in no picked folder)."""
    import re

    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    root = Path(lm_eval.tasks.__file__).parent
    names = "|".join(map(re.escape, task_list(CHATBAKER) + ["arc_easyy"]))
    pattern = re.compile(rf"^task:\s*[\"']?({names})[\"']?\s*$", re.M)
    folders = {root / p.relative_to(root).parts[0] for p in root.rglob("*.yaml")
               if pattern.search(p.read_text(encoding="utf-8", errors="replace"))}
    return TaskManager(include_path=sorted(map(str, folders)), include_defaults=False)


@pytest.fixture
def indexed(manager, monkeypatch):
    """`resolve_tasks` gets the module's index instead of building another."""
    import lm_eval.tasks

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", lambda: manager)
    return manager


def test_chatbaker_suite_names_exist_in_the_installed_lm_eval(indexed):
    """A task renamed in a new lm-eval fails here, not in a user's run; every suite member is there."""
    names = task_list(CHATBAKER)
    missing = [n for n in names if n not in indexed.all_subtasks]
    assert not missing, f"{CHATBAKER.name}: not tasks in the installed lm-eval: {missing}"
    suite = ("anli", "arc", "boolq", "hellaswag", "openbookqa", "piqa", "record", "rte", "truthfulqa_mc", "wic",
             "winogrande")
    assert all(any(n.startswith(s) for n in names) for s in suite)
    tasks, manager, skipped = resolve_tasks([str(CHATBAKER)])
    assert tasks == names and manager is indexed and not skipped


def test_an_unknown_name_is_refused_with_the_nearest_ones(indexed):
    with pytest.raises(ValueError, match=r"'arc_easyy' is neither a folder.*did you mean arc_easy"):
        resolve_tasks(["arc_easyy"])


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "test.jsonl").write_text('{"q": "하늘은?", "label": 0}\n', encoding="utf-8")
    (folder / "t1.yaml").write_text(TASK, encoding="utf-8")
    (folder / "group.yaml").write_text("group: g\ntask: [t1]\n", encoding="utf-8")
    return folder


def test_folders_files_and_task_lists_resolve_without_the_index(tmp_path, monkeypatch):
    """Local tasks alone never build lm-eval's index; their relative data files are found beside the YAML from
    any working directory; groups and templates are skipped and said so; a list inside a list expands."""
    folder = _folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.yaml").write_text(f"tasks: [{folder / 't1.yaml'}]\n", encoding="utf-8")
    (tmp_path / "outer.yaml").write_text("tasks: [list.yaml]\n", encoding="utf-8")
    monkeypatch.chdir(REPO)
    for spec in ([str(folder)], [str(folder / "t1.yaml")], [str(tmp_path / "list.yaml")]):
        tasks, manager, skipped = resolve_tasks(spec)
        assert manager is None and [t["task"] for t in tasks] == ["t1"], spec
        assert tasks[0]["dataset_kwargs"]["data_files"] == {"test": str(folder / "d" / "test.jsonl")}
        assert skipped == ([f"{folder / 'group.yaml'} (a group)"] if spec == [str(folder)] else [])
    monkeypatch.chdir(tmp_path)
    assert [t["task"] for t in resolve_tasks(["outer.yaml"])[0]] == ["t1"]


@pytest.mark.parametrize("files, message", [
    ({"t.yaml": "task: [oops\n"}, r"t.yaml: lm-eval cannot load this YAML"),
    ({"t.yaml": "dataset_path: json\n"}, r"holds no task YAML.*t.yaml \(no task: key\)"),
    ({"l.yaml": "tasks: [a]\nshots: 5\n"}, r"l.yaml: a task list holds only `tasks:`"),
    ({"l.yaml": "tasks: [l.yaml]\n"}, r"l.yaml is read twice"),
    ({"g.yaml": "group: g\ntask: [a]\n"}, r"g.yaml is a group, not a task YAML"),
    ({"t.yaml": TASK.replace("{{q}}", "{{q}")}, r"t.yaml: lm-eval cannot build task t1: TemplateSyntaxError"),
    ({"t.yaml": TASK.replace("d/test", "missing")}, r"t.yaml: lm-eval cannot build task t1: FileNotFoundError"),
])
def test_bad_task_files_are_named(tmp_path, monkeypatch, files, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "test.jsonl").write_text('{"q": "하늘은?", "label": 0}\n', encoding="utf-8")
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    spec = [str(tmp_path)] if "t.yaml" in files else [next(iter(files))]
    with pytest.raises(ValueError, match=message):
        resolve_tasks(spec)


def test_tasks_are_required_and_split_on_commas_and_spaces(tmp_path):
    assert LmEvalConfig(model="m", tasks=["arc_easy,piqa", "arc_easy", " hellaswag "]).tasks == \
        ["arc_easy", "piqa", "hellaswag"]
    with pytest.raises(ValueError, match="tasks: give lm-eval task names"):
        LmEvalConfig(model="m", tasks=[","])
    (tmp_path / "s.yaml").write_text("shots: [0]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="tasks"):
        load_config(LmEvalSection, str(tmp_path / "s.yaml"))


RESULTS = {  # the shape of lm-eval 0.4.13's results dict, cut down
    "results": {
        "arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.05, "acc_norm,none": 0.52,
                     "acc_norm_stderr,none": 0.049},
        "gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.1, "exact_match_stderr,strict-match": 0.01,
                  "exact_match,flexible-extract": 0.2, "exact_match_stderr,flexible-extract": "N/A"},
    },
    "n-samples": {"arc_easy": {"original": 2376, "effective": 100}},
}


def test_every_metric_and_filter_is_kept():
    rows = scores_from_results(RESULTS, 5)
    assert rows == [
        {"task": "arc_easy", "shots": 5, "n": 100, "metrics": {"acc": 0.5, "acc_norm": 0.52},
         "stderr": {"acc": 0.05, "acc_norm": 0.049}},
        {"task": "gsm8k", "shots": 5, "n": None,
         "metrics": {"exact_match (strict-match)": 0.1, "exact_match (flexible-extract)": 0.2},
         "stderr": {"exact_match (strict-match)": 0.01, "exact_match (flexible-extract)": None}},
    ]


def _data(limit=None):
    scores = scores_from_results(RESULTS, 0)
    base = json.loads(json.dumps(scores))
    base[0]["metrics"]["acc"] = 0.25
    del base[1]  # a baseline without one of the tasks: its cell reads —
    return {"benchmark": "lm-eval tasks: arc_easy, gsm8k", "lm_eval_version": "0.4.13",
            "settings": {"tasks": ["arc_easy", "gsm8k"], "shots": [0], "limit": limit, "batch_size": 8,
                         "skipped": [], "device": "cpu", "dtype": "fp32", "seconds": 1.0},
            "models": [{"label": "sft", "path": "runs/sft", "role": "model", "scores": scores},
                       {"label": "base", "path": "base", "role": "baseline", "scores": base}]}


def test_tables_put_the_baselines_beside_the_model(tmp_path):
    md = lm_eval_markdown(_data(), None)
    assert "| task | metric | n | sft | base (baseline) |" in md
    assert "| arc_easy | acc | 100 | 0.500 ± 0.050 | 0.250 ± 0.050 |" in md
    assert "| gsm8k | exact_match (flexible-extract) | — | 0.200 | — |" in md
    console = lm_eval_console_table(_data(limit=10))
    assert "lm-eval 0-shot" in console and "not comparable" in console
    (tmp_path / LM_EVAL_JSON).write_text(json.dumps(_data()), encoding="utf-8")
    report = write_report(tmp_path).read_text(encoding="utf-8")
    assert "## lm-eval tasks" in report and "![lm-eval tasks](lm_eval_tasks.png)" in report
    assert "**sft** = `runs/sft`" in report and (tmp_path / "lm_eval_tasks.png").stat().st_size > 3000
