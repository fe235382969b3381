"""`kotune eval lm-eval` on a local task folder, offline: the same numbers as lm-eval run directly on that folder."""

import json
import math
import os
import re
from pathlib import Path

import pytest

from kotune import cli
from kotune.eval.kobest import DATA_DIR

pytestmark = pytest.mark.slow

DOCS = 24  # test documents per task
FEWSHOT = 6  # train documents per task (the few-shot pool)

# Two tasks in lm-eval's own format, as a user would write them: one all Jinja, one through a shared template
# (`include:`) and a `!function` of a utils.py beside it; data files relative to the YAML.
COPA_YAML = """\
task: ko_copa_tiny
dataset_path: json
dataset_kwargs:
  data_files: {train: data/copa_train.jsonl, test: data/copa_test.jsonl}
output_type: multiple_choice
training_split: train
test_split: test
doc_to_text: "{{premise}} {{'그래서' if question == '결과' else '왜냐하면'}}"
doc_to_choice: "{{[alternative_1, alternative_2]}}"
doc_to_target: label
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
  - {metric: acc_norm, aggregation: mean, higher_is_better: true}
"""
TEMPLATE_YAML = """\
dataset_path: json
output_type: multiple_choice
training_split: train
test_split: test
doc_to_choice: ["부정", "긍정"]
doc_to_target: label
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
"""
SENTI_YAML = """\
include: _template.yaml
task: ko_senti_tiny
dataset_kwargs:
  data_files: {train: data/senti_train.jsonl, test: data/senti_test.jsonl}
doc_to_text: !function utils.senti_prompt
"""
UTILS_PY = '''\
def senti_prompt(doc):
    return "문장: " + doc["sentence"] + "\\n감정:"
'''


def _task_folder(root: Path) -> Path:
    """The two tasks above with KoBEST COPA and SentiNeg rows (the shipped files) as their data."""
    folder = root / "ko_tasks"
    (folder / "data").mkdir(parents=True)
    for name, text in (("ko_copa.yaml", COPA_YAML), ("_template.yaml", TEMPLATE_YAML), ("ko_senti.yaml", SENTI_YAML),
                       ("utils.py", UTILS_PY)):
        (folder / name).write_text(text, encoding="utf-8")
    for task, short in (("copa", "copa"), ("sentineg", "senti")):
        for split, n in (("test", DOCS), ("train", FEWSHOT)):
            lines = (DATA_DIR / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
            (folder / "data" / f"{short}_{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


SHOTS = 2  # few-shot examples drawn by lm-eval's seeded sampler from the train split
TASKS = ("ko_copa_tiny", "ko_senti_tiny")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _task_folder(tmp_path_factory.mktemp("lm_tasks"))


@pytest.fixture(scope="module")
def direct(tiny_neox, folder) -> dict:
    """lm-eval on its own: its HFLM loads the model files, its TaskManager reads the folder, and it runs from
    inside the folder (where the relative data_files point)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    here = os.getcwd()
    os.chdir(folder)
    try:
        lm = HFLM(pretrained=str(tiny_neox), batch_size=8, device="cpu", dtype="float32")
        return simple_evaluate(model=lm, tasks=list(TASKS), num_fewshot=SHOTS, limit=DOCS, log_samples=True,
                               task_manager=TaskManager(include_path=str(folder), include_defaults=False))
    finally:
        os.chdir(here)


def test_every_document_scores_as_in_lm_eval_run_directly(tiny_neox, folder, direct):
    """kotune's lm-eval invocation on the folder (`resolve_tasks` reading it, `load_lm` loading the model,
    `evaluate_lm`), from another working directory, against lm-eval's own. Same model files, YAMLs, data, shots,
    limit, batch size, fp32 on CPU. Compared: every document's scored strings (few-shot examples included)
    exactly, its log-likelihoods within float32 rounding (`_close`; two separately loaded copies of the model
    may take different kernels), its acc, and the aggregates."""
    from kotune.eval.harness import evaluate_lm, load_lm
    from kotune.eval.lm_tasks import resolve_tasks

    tasks, manager, skipped = resolve_tasks([str(folder)])
    assert manager is None and [t["task"] for t in tasks] == sorted(TASKS) and "_template.yaml" in skipped[0]
    lm = load_lm(str(tiny_neox), batch_size=8, device="cpu", dtype="fp32")
    ours = evaluate_lm(lm, tasks, num_fewshot=SHOTS, limit=DOCS, log_samples=True)
    for task in TASKS:
        assert ours["n-samples"][task]["effective"] == direct["n-samples"][task]["effective"] == DOCS
        for a, b in zip(ours["samples"][task], direct["samples"][task], strict=True):
            assert (a["doc_id"], a["arguments"], a["target"]) == (b["doc_id"], b["arguments"], b["target"])
            for (ll_a, _), (ll_b, _) in zip(a["filtered_resps"], b["filtered_resps"], strict=True):
                assert _close(ll_a, ll_b, a["arguments"]), (task, a["doc_id"], ll_a, ll_b)
            assert a["acc"] == b["acc"], (task, a["doc_id"])
        assert "\n\n" in ours["samples"][task][0]["arguments"][0][0], "few-shot examples are in the context"
        for metric in ("acc,none", "acc_norm,none") if task == "ko_copa_tiny" else ("acc,none",):
            assert ours["results"][task][metric] == direct["results"][task][metric], (task, metric)


def test_cli_saves_prints_and_reports_lm_eval_numbers_beside_a_baseline(tiny_neox, tiny_llama, folder, direct,
                                                                       capsys):
    out = folder.parent / "eval"
    code = cli.main(["eval", "lm-eval", str(tiny_neox), "--tasks", str(folder), "--shots", str(SHOTS), "--limit",
                     str(DOCS), "--batch-size", "8", "--device", "cpu", "--dtype", "fp32", "--out", str(out),
                     "--baseline", str(tiny_llama)])
    assert code == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "lm_eval_tasks.json").read_text(encoding="utf-8"))
    scores = {s["task"]: s for s in saved["models"][0]["scores"]}
    for task in TASKS:
        expected = direct["results"][task]
        assert scores[task]["metrics"]["acc"] == expected["acc,none"] and scores[task]["n"] == DOCS
        assert scores[task]["stderr"]["acc"] == expected["acc_stderr,none"]
        row = rf"^{task}\s+acc\s+{DOCS}\s+{expected['acc,none']:.3f} ± {expected['acc_stderr,none']:.3f}\s+0\."
        assert re.search(row, printed, re.M), printed
    assert "lm-eval 2-shot" in printed
    assert "results" in json.loads((out / "lm_eval_tasks" / "gpt-neox_2shot.json").read_text(encoding="utf-8"))
    assert [(m["label"], m["role"]) for m in saved["models"]] == [("gpt-neox", "model"), ("llama", "baseline")]
    assert {s["task"] for s in saved["models"][1]["scores"]} == set(TASKS)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## lm-eval tasks" in report and "| task | metric | n | gpt-neox | llama (baseline) |" in report
    assert "| ko_copa_tiny | acc_norm | 24 |" in report and (out / "lm_eval_tasks.png").stat().st_size > 3000


def _close(a: float, b: float, arguments) -> bool:
    """Two float32 sums of a continuation's token log-probabilities agree to float32 rounding: each token's
    log-softmax carries a relative error of a few float32 epsilons of the largest logit magnitudes involved, and
    the sum adds one per token, so |a - b| is bounded by eps * (|a| + tokens) times a small constant. The
    continuation is at most a few words here; the context length is the bound used for the token count."""
    eps = 2.0 ** -23
    tokens = max(len(arg[0]) + len(arg[1]) for arg in arguments)  # characters bound tokens from above
    return math.isclose(a, b, rel_tol=0, abs_tol=16 * eps * (abs(a) + abs(b) + tokens))
