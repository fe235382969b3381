"""The quickstart pipeline, trimmed (same stages, fewer steps), from a clean folder through the real CLI."""

import json
import os
import re
import subprocess
import sys

import pytest

from kotune_test_paths import REPO

pytestmark = pytest.mark.slow

TRIM = ["pretrain.set.train.max_steps=8", "sft.set.train.max_steps=4", "sft.set.data.eval_fraction=0.02",
        "dpo.set.train.max_steps=2",
        "eval_kobest.limit=4", "eval_kobest.tasks=[boolq,copa]", "eval_generate.limit=2", "eval_generate.max_new_tokens=8"]


def pipeline(run_dir, *extra):
    cmd = [sys.executable, "-m", "kotune.cli", "pipeline", "recipes/quickstart.yaml", f"run_dir={run_dir}", *TRIM, *extra]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    return result


def test_trimmed_quickstart_runs_every_stage_then_skips_them(tmp_path):
    run_dir = tmp_path / "quick"
    first = pipeline(run_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    for path in ["check/check.txt", "tokenizer/tokenizer.json", "tokenizer/tokenizer_report.json", "pretrain/model.safetensors",
                 "pretrain/eval.json", "sft/model.safetensors", "sft/data_report.json", "sft/loss.png", "sft/sft_report.json",
                 "dpo/dpo_report.json", "dpo/curves.png", "eval/kobest.json", "eval/generation.json",
                 "eval/generations.jsonl", "report.md", "pipeline.json"]:
        assert (run_dir / path).is_file(), path
    manifest = json.loads((run_dir / "pipeline.json").read_text())
    assert manifest["final_model"] == str(run_dir / "dpo")
    assert [name for name, _ in manifest["models"]] == ["pretrain", "sft", "dpo"]
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    for section in ["## Data", "## Training", "## Evaluation", "## Configuration", "held-out perplexity",
                    "trained fraction", "![sft curves](sft/loss.png)", "polyglot-ko-1.3b", "stop rate",
                    "Held out from training: 40 example(s)", "| before SFT (the model it started from) |", "| after SFT |"]:
        assert section in report, section
    assert f"kotune chat {run_dir}" in first.stdout

    second = pipeline(run_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("done earlier, skipped") == 7

    forced = pipeline(run_dir, "--force", "eval_generate")
    assert forced.returncode == 0 and forced.stdout.count("done earlier, skipped") == 6


def test_a_failing_stage_is_named_and_earlier_outputs_kept(tmp_path):
    run_dir = tmp_path / "broken"
    result = pipeline(run_dir, "sft.set.data.files=[missing.json]")
    assert result.returncode == 1
    assert "stage sft failed" in result.stderr and "missing.json" in result.stderr
    assert (run_dir / "pretrain" / "model.safetensors").is_file()
    assert not (run_dir / ".stages" / "sft.json").exists()


def test_pipeline_launches_its_training_stages_on_n_processes(tiny_neox, tmp_path):
    """nproc: 2 runs SFT as `kotune sft --nproc 2` would (both ranks), and the pipeline carries on from its output."""
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(
        f"run_dir: {tmp_path / 'run'}\nbase_model: {tiny_neox}\nnproc: 2\n"
        "sft:\n  recipe: recipes/sft/quickstart_tiny.yaml\n"
        "  set: {train.max_steps: 2, train.global_batch_size: 8, train.micro_batch_size: 2, data.max_length: 256,\n"
        "        data.eval_fraction: 0.02}\n",
        encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "kotune.cli", "pipeline", str(recipe)], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "process 0 of 2 (MULTI_CPU)" in log and "process 1 of 2 (MULTI_CPU)" in log
    assert (tmp_path / "run" / "sft" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "pipeline.json").read_text())["final_model"] == str(tmp_path / "run" / "sft")


def test_a_rerun_redoes_exactly_the_stages_whose_inputs_changed(tiny_neox, tmp_path):
    """Data check + tiny SFT + generation checks through the CLI: an unchanged rerun does nothing; a `set:` change,
    an edited data file and a missing completion record (a killed stage) each redo the stage concerned and the ones
    that start from it. (Every combination of causes runs with fake stages in tests/unit/pipeline.)"""
    records = json.loads((REPO / "data/samples/koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))[:24]
    data = tmp_path / "sft.json"
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    pairs = tmp_path / "pairs.json"
    pairs.write_text('[{"prompt": "안녕", "chosen": "안녕하세요", "rejected": "몰라"}]', encoding="utf-8")
    recipe = tmp_path / "pipeline.yaml"
    recipe.write_text(
        f"run_dir: {tmp_path / 'run'}\nbase_model: {tiny_neox}\ncheck: [{pairs}]\n"
        "sft:\n  recipe: recipes/sft/quickstart_tiny.yaml\n"
        f"  set: {{data.files: [{data}], train.max_steps: 1, train.global_batch_size: 4, train.micro_batch_size: 4, "
        "data.max_length: 256}\n"
        "eval_generate: {limit: 1, max_new_tokens: 4}\n", encoding="utf-8")

    def ran(*extra) -> list[str]:
        result = subprocess.run([sys.executable, "-m", "kotune.cli", "pipeline", str(recipe), *extra], cwd=REPO,
                                capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        return re.findall(r"^\[\d+/\d+\] (\w+)(?!: done earlier, skipped)\b", result.stdout, flags=re.M)

    assert ran() == ["check", "sft", "eval_generate"]
    assert ran() == []
    assert "reused (ran " in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")

    dry = subprocess.run([sys.executable, "-m", "kotune.cli", "pipeline", str(recipe), "sft.set.train.max_steps=2",
                          "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert "sft: train.max_steps 1 -> 2; redoing sft, eval_generate" in dry.stdout, dry.stdout + dry.stderr
    assert ran("sft.set.train.max_steps=2") == ["sft", "eval_generate"]

    pairs.write_text('[{"prompt": "안녕", "chosen": "반가워요", "rejected": "몰라"}]', encoding="utf-8")
    assert ran("sft.set.train.max_steps=2") == ["check"]  # only the data check reads it

    (tmp_path / "run" / ".stages" / "eval_generate.json").unlink()  # as if killed before it finished
    assert ran("sft.set.train.max_steps=2") == ["eval_generate"]
