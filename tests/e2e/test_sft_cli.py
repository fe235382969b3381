"""The SFT stage through the real CLI: quickstart recipe, data preview, and resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from kotune_test_paths import REPO, SAMPLES

pytestmark = pytest.mark.slow


def kotune(*args, check=True, **kw):
    result = subprocess.run([sys.executable, "-m", "kotune.cli", *map(str, args)], cwd=REPO, capture_output=True, text=True, **kw)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_quickstart_recipe_trains_and_preview_matches_trainer(tmp_path):
    base = tmp_path / "tiny-base"
    kotune("model", "tiny", "--out", base, "--vocab-size", "2000")
    out = tmp_path / "sft"
    result = kotune("sft", "recipes/sft/quickstart_tiny.yaml", f"model={base}", f"output_dir={out}", "train.max_steps=3")
    assert "labels hold EOS" in result.stdout and "trained tokens" in result.stdout
    for name in ("model.safetensors", "config.yaml", "metrics.jsonl", "loss.png", "data_report.json", "sft_report.json"):
        assert (out / name).is_file(), name
    # The recipe holds out a tenth of the 2,000 prompts by default and scores them before and after training.
    assert json.loads((out / "data_report.json").read_text())["held_out"]["examples"] == 200
    held = json.loads((out / "sft_report.json").read_text())["held_out"]
    assert held["examples"] == 200 and {"before", "after", "change"} <= held.keys()
    assert "held-out loss on 200 example(s)" in result.stdout

    preview = kotune("data", "preview", "recipes/sft/quickstart_tiny.yaml", f"model={out}", "--json", "--limit", "3")
    rows = [json.loads(line) for line in preview.stdout.splitlines()]
    assert len(rows) == 3

    from transformers import AutoTokenizer

    from kotune.data.loading import load_examples
    from kotune.data.tokenize import tokenize_conversations

    tok = AutoTokenizer.from_pretrained(out)  # the saved tokenizer carries the training template
    convs = load_examples([str(SAMPLES / "koalpaca_v1.0.sample.json")]).examples[:3]
    expected = tokenize_conversations(tok, convs, max_length=512)
    for row, ex, conv in zip(rows, expected, convs):
        assert row["input_ids"] == ex.input_ids and row["labels"] == ex.labels
        assert row["text"] == tok.apply_chat_template(conv.as_dicts(), tokenize=False)

    marked = kotune("data", "preview", "recipes/sft/quickstart_tiny.yaml", f"model={out}", "--limit", "1").stdout
    assert f"⟦{convs[0].messages[1].content}{tok.eos_token}⟧" in marked


def test_resume_after_kill_matches_uninterrupted_run(tiny_neox, tmp_path):
    records = json.loads((SAMPLES / "koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))[:48]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    args = [f"model={tiny_neox}", f"data.files=[{data}]", "data.template=koalpaca", "data.max_length=192",
            "train.max_steps=24", "train.global_batch_size=8", "train.micro_batch_size=4", "train.learning_rate=3e-3",
            "train.save_every=2", "train.seed=3"]
    recipe = REPO / "recipes/sft/quickstart_tiny.yaml"
    kotune("sft", recipe, f"output_dir={tmp_path / 'whole'}", *args)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "kotune.cli", "sft", str(recipe), f"output_dir={killed}", *args],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list((killed / "checkpoints").glob("step-0000006/state.json")) and time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before the kill"

    resumed = kotune("sft", recipe, f"output_dir={killed}", *args, "train.resume=true")
    assert "resumed from" in resumed.stdout
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    again = load_file(killed / "model.safetensors")
    assert whole.keys() == again.keys()
    worst = max((whole[k] - again[k]).abs().max().item() for k in whole)
    assert worst <= 1e-4, worst
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 25))  # metrics continue without gaps or repeats
    # Held-out loss before the first step (written before the kill, kept) and after the last, once each.
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 24]
    reports = [json.loads((folder / "sft_report.json").read_text())["held_out"] for folder in (tmp_path / "whole", killed)]
    assert reports[0]["before"] == reports[1]["before"]  # the resumed run compares with the same step-0 scores
