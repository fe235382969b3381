"""`kotune eval kobest` end to end on a tiny model: the same numbers as lm-eval's own kobest tasks, and a report."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from kotune_test_paths import REPO
from kotune.eval.config import KobestConfig
from kotune.eval.commands import kobest
from kotune.eval.harness import evaluate_lm
from kotune.eval.kobest import DATA_DIR, TASKS, scores_from_results, task_configs

pytestmark = pytest.mark.slow


def _bundled_configs(tasks):
    """lm-eval 0.4.13's own kobest YAMLs (lm_eval/tasks/kobest/), unchanged but for where the data comes from."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    configs = []
    for task in tasks:
        cfg = load_yaml(Path(lm_eval.tasks.__file__).parent / "kobest" / f"kobest_{task}.yaml", resolve_func=True)
        cfg["dataset_path"], cfg["dataset_name"] = "json", None  # was: skt/kobest_v1, <task> (the Hub)
        cfg["dataset_kwargs"] = {"data_files": {s: str(DATA_DIR / task / f"{s}.jsonl")
                                                for s in ("train", "validation", "test")}}
        configs.append(cfg)
    return configs


def test_scores_equal_lm_eval_kobest_tasks(tiny_neox, caplog):
    """kotune's KoBEST numbers are lm-eval's kobest_* numbers, document by document.

    Same: the model object and its HFLM wrapper (one instance, batch size 8), the data (the shipped KoBEST v1.0
    JSONL), `simple_evaluate` with the same num_fewshot, limit and default seeds, and on lm-eval's side its bundled
    kobest YAMLs (prompts, choices, targets, process_docs, metrics, `utils.macro_f1_score`) as installed.
    Changed in the bundled YAMLs: only `dataset_path`/`dataset_name` (`skt/kobest_v1` on the Hub, unreachable
    here) and `dataset_kwargs` (the local files), which is where kotune's own YAMLs differ too. Not copied:
    the bundled f1 entry's `hf_evaluate: true`, which logs an error offline (kotune's run must log none) and
    then aggregates the same (gold, pred) pairs with the same function.
    Compared: every document's scored strings (context + each choice, few-shot examples included), their
    log-likelihoods and per-document acc/f1 items, and the aggregate acc, acc_norm and macro-F1. A random tiny
    model predicts nearly the same choice everywhere, so equal aggregates alone would prove little.
    Runs 0-shot on the first 20 test documents of each task, and 2-shot (examples drawn from the train split by
    lm-eval's seeded sampler) on the first 5 of each task but BoolQ, whose 3-paragraph contexts would double
    the test's time without exercising anything the other four do not.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from kotune.models.load import load_model, load_tokenizer

    lm = HFLM(pretrained=load_model(str(tiny_neox)), tokenizer=load_tokenizer(str(tiny_neox)), batch_size=8)
    for shots, limit, tasks in ((0, 20, TASKS), (2, 5, [t for t in TASKS if t != "boolq"])):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            ours_results = evaluate_lm(lm, task_configs(tasks), num_fewshot=shots, limit=limit, log_samples=True)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "kotune's run logged errors"
        theirs_results = simple_evaluate(model=lm, tasks=_bundled_configs(tasks), num_fewshot=shots, limit=limit,
                                         task_manager=TaskManager(include_defaults=False), log_samples=True)

        for task in tasks:
            ours_docs, theirs_docs = ours_results["samples"][f"kobest_{task}"], theirs_results["samples"][f"kobest_{task}"]
            assert len(ours_docs) == len(theirs_docs) == limit
            for a, b in zip(ours_docs, theirs_docs):
                for key in ("doc_id", "arguments", "target", "filtered_resps", "acc", "f1"):
                    assert a[key] == b[key], (shots, task, a["doc_id"], key)
            if shots:
                assert "\n\n" in ours_docs[0]["arguments"][0][0], "few-shot examples are in the context"
        ours = scores_from_results(ours_results, tasks, shots)
        theirs = scores_from_results(theirs_results, tasks, shots)
        for a, b in zip(ours, theirs):
            for key in ("acc", "f1", "acc_norm"):
                assert a[key] == b[key], (shots, a["task"], key, a[key], b[key])
        assert ours[tasks.index("hellaswag")]["acc_norm"] is not None


def _lora_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter on `base` with non-zero B matrices (so it changes the model), saved with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from kotune.models.load import load_tokenizer
    from kotune.models.lora import apply_lora

    model = apply_lora(AutoModelForCausalLM.from_pretrained(base), r=4, alpha=8, dropout=0.0, target_modules=None)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(out)
    load_tokenizer(str(base)).save_pretrained(out)
    return out


def test_adapter_against_its_base_writes_tables_and_report(tiny_neox, tmp_path):
    adapter = _lora_adapter(tiny_neox, tmp_path / "sft-lora")
    out = tmp_path / "eval"
    data = kobest(KobestConfig(model=str(adapter), tasks=["copa", "sentineg"], shots=[0, 1], limit=4, batch_size=4,
                               out=str(out), baselines=[str(tiny_neox)]))

    saved = json.loads((out / "kobest.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(data))
    assert [(m["label"], m["role"]) for m in saved["models"]] == [("sft-lora", "model"), ("gpt-neox", "baseline")]
    for m in saved["models"]:
        assert {(s["task"], s["shots"]) for s in m["scores"]} == {(t, k) for t in ("copa", "sentineg") for k in (0, 1)}
        assert all(0 <= s["f1"] <= 1 and 0 <= s["acc"] <= 1 and s["n"] == 4 for s in m["scores"])
    for name in ("sft-lora_0shot.json", "sft-lora_1shot.json", "gpt-neox_0shot.json", "gpt-neox_1shot.json"):
        assert "results" in json.loads((out / "lm_eval" / name).read_text(encoding="utf-8"))

    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| sft-lora |" in report and "| gpt-neox (baseline) |" in report
    assert "| polyglot-ko-1.3b (published) | 0.711 | 0.682 |" in report
    assert (out / "kobest.png").stat().st_size > 5000


def test_cli_kobest(tiny_neox, tmp_path):
    out = tmp_path / "eval"
    result = subprocess.run([sys.executable, "-m", "kotune.cli", "eval", "kobest", str(tiny_neox), "--tasks", "copa",
                             "--limit", "4", "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "KoBEST 0-shot, macro-F1" in result.stdout
    assert (out / "report.md").is_file() and (out / "kobest.json").is_file()

    bad = subprocess.run([sys.executable, "-m", "kotune.cli", "eval", "kobest", str(tiny_neox), "--tasks", "copaa"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown KoBEST task copaa" in bad.stderr
