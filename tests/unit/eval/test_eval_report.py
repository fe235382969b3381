"""report.md from an eval folder: KoBEST beside the published rows and a baseline, generation table, samples, charts."""

import json

import pytest

from kotune.eval.generation_checks import check_reply, summarize
from kotune.eval.report import write_report
from kotune.eval.runs import GENERATION_JSON, GENERATIONS_JSONL, KOBEST_JSON

LOOP = "같은 말을 계속 반복합니다. " * 10


def _scores(f1: float, shots: int = 0):
    tasks = ("boolq", "copa", "wic", "hellaswag", "sentineg")
    return [{"task": t, "shots": shots, "n": 20, "acc": 0.5, "acc_stderr": 0.1,
             "acc_norm": 0.75 if t == "hellaswag" else None, "f1": f1} for t in tasks]


def _kobest():
    return {
        "benchmark": "KoBEST v1.0, test splits", "lm_eval_version": "0.4.13",
        "settings": {"tasks": ["boolq", "copa", "wic", "hellaswag", "sentineg"], "shots": [0, 5], "limit": 20,
                     "batch_size": 8, "data_dir": "d", "device": "cpu", "dtype": "fp32"},
        "models": [{"label": "sft", "path": "runs/sft", "role": "model", "scores": _scores(0.6) + _scores(0.7, 5)},
                   {"label": "base", "path": "runs/base", "role": "baseline", "scores": _scores(0.4) + _scores(0.45, 5)}],
    }


def _generation(tmp_path):
    rows = []
    entries = []
    for label, replies in (("sft", [("깔끔한 답입니다.", True), (LOOP, False)]), ("base", [(LOOP, False), (LOOP, False)])):
        checks = [check_reply(text, eos, 10) for text, eos in replies]
        for i, ((text, _), check) in enumerate(zip(replies, checks)):
            rows.append({"model": label, "id": f"p{i}", "category": "facts",
                         "messages": [{"role": "user", "content": f"질문 {i}"}], "output": text, **check.to_dict()})
        entries.append({"label": label, "path": f"runs/{label}", "role": "model" if label == "sft" else "baseline",
                        "template_note": None, "summary": summarize([t for t, _ in replies], checks),
                        "looping_ids": [f"p{i}" for i, c in enumerate(checks) if c.looping]})
    (tmp_path / GENERATIONS_JSONL).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    return {"settings": {"prompts": "p.jsonl", "n_prompts": 2, "max_new_tokens": 10, "temperature": 0.0,
                         "batch_size": 2, "loop_rule": {"min_chars": 40, "char_n": 10, "char_rate": 0.35}},
            "models": entries}


def test_report_with_kobest_and_generation(tmp_path):
    (tmp_path / KOBEST_JSON).write_text(json.dumps(_kobest()), encoding="utf-8")
    (tmp_path / GENERATION_JSON).write_text(json.dumps(_generation(tmp_path), ensure_ascii=False), encoding="utf-8")
    report = write_report(tmp_path).read_text(encoding="utf-8")

    # KoBEST: our rows, the baseline, the published rows with their sources, only in the 0-shot tables
    zero_shot_f1 = report.split("### 0-shot macro-F1")[1].split("###")[0]
    assert "| sft | 0.600 | 0.600 | 0.600 | 0.600 | 0.600 | 0.600 |" in zero_shot_f1
    assert "| base (baseline) | 0.400 |" in zero_shot_f1
    assert "| polyglot-ko-1.3b (published) | 0.355 | 0.711 | 0.327 | 0.401 | 0.682 | 0.495 |" in zero_shot_f1
    # 42dot published no WiC score: its average over the table's tasks would mislead, so it is left out
    assert "| 42dot LLM-PLM-1.3B (published) | 0.369 | 0.704 | — | 0.431 | 0.690 | — |" in zero_shot_f1
    assert "published" not in report.split("### 5-shot macro-F1")[1].split("Reference rows")[0]
    assert "https://github.com/EleutherAI/lm-evaluation-harness/pull/1263" in report
    assert "https://huggingface.co/42dot/42dot_LLM-PLM-1.3B" in report
    # accuracy uses acc_norm for HellaSwag
    assert "| sft | 0.500 | 0.500 | 0.500 | 0.750 | 0.500 | 0.550 |" in report.split("### 0-shot accuracy")[1]
    assert "not comparable with the published ones" in report  # --limit was used

    # generation: the table, the looping ids, a looping sample
    assert "| sft | 2 | 0.50 | 1/2 |" in report
    assert "| base (baseline) | 2 | 0.00 | 2/2 |" in report
    assert "Looping replies of base: p0, p1." in report
    assert "LOOPING" in report and "> 깔끔한 답입니다." in report

    for png in ("kobest.png", "generation.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({png})" in report


def test_report_needs_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="`kotune eval lm-eval` or `kotune eval generate` with --out"):
        write_report(tmp_path)


def test_console_table_carries_the_limit_note_beside_published_rows():
    from kotune.eval.report import kobest_console_table

    limited = kobest_console_table(_kobest())
    assert "polyglot-ko-1.3b (published)" in limited
    assert "note: Only the first 20 test documents of each task were scored (`--limit`): these numbers are not " \
           "comparable with the published ones." in limited
    full = _kobest()
    full["settings"]["limit"] = None
    assert "not comparable" not in kobest_console_table(full)
