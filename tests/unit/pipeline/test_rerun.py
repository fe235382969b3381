"""Which stages a pipeline rerun redoes: the real planning and records, with each stage's work replaced by a fake
that writes one file, so every case runs in milliseconds."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from kotune.config import from_dict
from kotune.pipeline.config import PipelineConfig
from kotune.pipeline.run import Pipeline, StageFailed


class FakePipeline(Pipeline):
    """Stage bodies that record their call and write a file into their output, instead of training."""

    def __init__(self, *args, fail: str | None = None, **kw):
        super().__init__(*args, **kw)
        self.calls: list[str] = []
        self.fail = fail

    def _body(self, stage: str, cfg) -> None:
        self.calls.append(stage)
        self.out(stage).mkdir(parents=True, exist_ok=True)
        (self.out(stage) / f"{stage}.txt").write_text("partial" if stage == self.fail else "done")
        if stage == self.fail:
            raise RuntimeError("killed")



@pytest.fixture
def project(tmp_path):
    """A base model folder, SFT and preference data, the stage recipes and the pipeline recipe (as a dict)."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"hidden_size": 8}')
    (base / "model.safetensors").write_bytes(b"\0" * 4096)
    (tmp_path / "sft.json").write_text('[{"instruction": "a", "output": "b"}]')
    (tmp_path / "pairs.json").write_text('[{"prompt": "a", "chosen": "b", "rejected": "c"}]')
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "안녕"}\n')
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(
        {"model": "x", "output_dir": "x", "data": {"files": [str(tmp_path / "sft.json")]},
         "train": {"learning_rate": 2.0e-3}}))
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(
        {"model": "x", "output_dir": "x", "data": {"files": [str(tmp_path / "pairs.json")]}}))
    return {"run_dir": str(tmp_path / "run"), "base_model": str(base), "check": [str(tmp_path / "pairs.json")],
            "sft": {"recipe": str(tmp_path / "sft.yaml")}, "dpo": {"recipe": str(tmp_path / "dpo.yaml")},
            "eval_generate": {"prompts": str(tmp_path / "prompts.jsonl"), "limit": 2}}


def run(recipe: dict, force=(), fail=None) -> tuple[list[str], list[str]]:
    """Run the pipeline; returns (stages run, lines logged)."""
    lines: list[str] = []
    pipeline = FakePipeline(from_dict(PipelineConfig, recipe), list(force), lines.append, fail=fail)
    pipeline.run()
    return pipeline.calls, lines


def test_first_run_runs_every_stage_and_an_unchanged_rerun_none(project):
    assert run(project)[0] == ["check", "sft", "dpo", "eval_generate"]
    calls, lines = run(project)
    assert calls == []
    assert sum("done earlier, skipped (unchanged since" in line for line in lines) == 4


def test_a_changed_set_value_redoes_that_stage_and_the_stages_after_it(project):
    run(project)
    project["sft"]["set"] = {"train.learning_rate": 0.0001}
    calls, lines = run(project)
    assert calls == ["sft", "dpo", "eval_generate"]
    assert "sft: train.learning_rate 0.002 -> 0.0001; redoing sft, dpo, eval_generate" in lines
    assert any("dpo: redoing (it starts from sft, redone in this run)" in line for line in lines)
    assert run(project)[0] == []  # and the new value is what the records now hold


def test_an_edited_data_file_redoes_the_stages_that_read_it_and_those_after(project, tmp_path):
    run(project)
    (tmp_path / "pairs.json").write_text('[{"prompt": "a", "chosen": "B", "rejected": "c"}]')
    calls, lines = run(project)
    assert calls == ["check", "dpo", "eval_generate"]  # SFT does not read the pairs
    assert f"check: {tmp_path / 'pairs.json'} changed; redoing check" in lines
    assert f"dpo: {tmp_path / 'pairs.json'} changed; redoing dpo, eval_generate" in lines


def test_a_replaced_base_model_redoes_every_stage_that_starts_from_it(project, tmp_path):
    run(project)
    (tmp_path / "base" / "model.safetensors").write_bytes(b"\1" * 4096)  # same size: the content decides
    calls, lines = run(project)
    assert calls == ["sft", "dpo", "eval_generate"]
    assert f"sft: {tmp_path / 'base' / 'model.safetensors'} changed; redoing sft, dpo, eval_generate" in lines


def test_a_killed_stage_is_redone_and_keeps_its_partial_output_when_unchanged(project):
    with pytest.raises(StageFailed, match="stage dpo failed"):
        run(project, fail="dpo")
    out = os.path.join(project["run_dir"], "dpo")
    assert not os.path.exists(os.path.join(project["run_dir"], ".stages", "dpo.json"))
    calls, lines = run(project)
    assert calls == ["dpo", "eval_generate"]
    assert any(line.startswith("dpo: it started ") and "did not finish; redoing dpo, eval_generate" in line
               for line in lines)
    assert open(os.path.join(out, "dpo.txt")).read() == "done"


def test_a_killed_stage_whose_inputs_changed_starts_from_an_empty_folder(project):
    with pytest.raises(StageFailed):
        run(project, fail="sft")
    (open(os.path.join(project["run_dir"], "sft", "stale.txt"), "w")).close()
    project["sft"]["set"] = {"train.learning_rate": 0.0001}
    assert run(project)[0] == ["sft", "dpo", "eval_generate"]
    assert not os.path.exists(os.path.join(project["run_dir"], "sft", "stale.txt"))


def test_force_redoes_a_stage_and_the_stages_that_start_from_it(project):
    run(project)
    assert run(project, force=["sft"])[0] == ["sft", "dpo", "eval_generate"]
    assert run(project, force=["check"])[0] == ["check"]  # nothing starts from the data check
    with pytest.raises(ValueError, match="--force: unknown stage 'ppo'"):
        run(project, force=["ppo"])


def test_a_record_without_fingerprint_counts_as_changed(project):
    run(project)
    marker = os.path.join(project["run_dir"], ".stages", "dpo.json")
    with open(marker) as f:
        old = json.load(f)
    with open(marker, "w") as f:
        json.dump({"stage": "dpo", "seconds": old["seconds"]}, f)  # as kotune wrote it before fingerprints
    calls, lines = run(project)
    assert calls == ["dpo", "eval_generate"]
    assert any("dpo: its completion record is older than fingerprints" in line for line in lines)


def test_a_stage_whose_output_was_deleted_is_redone(project):
    run(project)
    import shutil

    shutil.rmtree(os.path.join(project["run_dir"], "sft"))
    calls, lines = run(project)
    assert calls == ["sft", "dpo", "eval_generate"]
    assert any(line.startswith("sft: its output ") and line.endswith("is gone; redoing sft, dpo, eval_generate")
               for line in lines)


def test_report_says_per_stage_whether_it_ran_now_or_was_reused(project):
    run(project)
    project["eval_generate"]["limit"] = 3
    run(project)
    report = open(os.path.join(project["run_dir"], "report.md"), encoding="utf-8").read()
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    assert "reused (ran " in rows["sft"] and "reused (ran " in rows["check"]
    assert "ran in this invocation" in rows["eval_generate"]
    manifest = json.loads(open(os.path.join(project["run_dir"], "pipeline.json")).read())
    assert manifest["reused"] == ["check", "sft", "dpo"]


def test_dry_run_says_what_would_run_and_why_and_writes_nothing(project, tmp_path):
    lines: list[str] = []
    pipeline = FakePipeline(from_dict(PipelineConfig, project), log=lines.append)
    assert [s.redo for s in pipeline.dry_run()] == [True] * 4
    assert pipeline.calls == [] and not os.path.exists(project["run_dir"])
    run(project)
    project["sft"]["set"] = {"train.learning_rate": 0.0001}
    lines.clear()
    pipeline = FakePipeline(from_dict(PipelineConfig, project), log=lines.append)
    steps = pipeline.dry_run()
    assert [(s.stage, s.redo) for s in steps] == [("check", False), ("sft", True), ("dpo", True),
                                                 ("eval_generate", True)]
    assert pipeline.calls == [] and "sft: train.learning_rate 0.002 -> 0.0001; redoing sft, dpo, eval_generate" in lines
    assert [line.split()[:2] for line in lines if line.startswith("  ")] == [
        ["check", "skip"], ["sft", "run"], ["dpo", "run"], ["eval_generate", "run"]]
    assert sum("redoing" in line for line in lines) == 1  # one cause, named once
    assert run(project)[0] == ["sft", "dpo", "eval_generate"]  # the dry run changed no record
