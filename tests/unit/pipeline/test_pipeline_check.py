"""A pipeline builds every stage's configuration before its first stage runs: a bad key in the last stage fails at
once, naming the stage, the file (or the pipeline's `set`) and the key; `--check` does only that."""

from __future__ import annotations

import os

import pytest
import yaml

from kotune.cli import main
from kotune.config import ConfigError, from_dict, load_config
from kotune.pipeline.config import PipelineConfig
from kotune.pipeline.run import Pipeline, run
from kotune_test_paths import REPO

from test_rerun import FakePipeline, project  # noqa: F401  (the fixture)


def _run_fails(recipe: dict, message: str) -> None:
    pipeline = FakePipeline(from_dict(PipelineConfig, recipe), [], lambda _: None)
    with pytest.raises(ConfigError, match=message):
        pipeline.run()
    assert pipeline.calls == []  # no stage ran: not the data check, not SFT
    assert not os.path.exists(recipe["run_dir"])  # and nothing was written


def test_a_bad_set_key_in_the_last_training_stage_fails_before_any_stage(project):
    project["dpo"]["set"] = {"train.bogus": 1}
    _run_fails(project, r"stage dpo: pipeline dpo\.set\.train\.bogus: unknown key train\.bogus")


def test_a_bad_key_in_the_last_stage_recipe_file_names_the_file(project, tmp_path):
    recipe = yaml.safe_load(open(project["dpo"]["recipe"]))
    recipe["beta"] = "high"  # a value of the wrong type, in the file itself
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(recipe))
    _run_fails(project, rf"stage dpo: {tmp_path / 'dpo.yaml'}: beta: expected a number, got 'high'")


def test_bad_evaluation_and_tokenizer_sections_fail_when_the_pipeline_recipe_loads(project, tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(project))
    for override, message in [("eval_generate.max_new_token=8", "unknown key eval_generate.max_new_token"),
                              ("eval_generate.limit=0", "limit: expected a positive number of prompts"),
                              ("eval_kobest.tasks=[copaa]", "unknown KoBEST task copaa"),
                              ("eval_lm_eval.limit=5", "missing required key eval_lm_eval.tasks"),
                              ("tokenizer.style=bert", "tokenizer.style: 'bert' is not one of gpt-neox, llama"),
                              ("tokenizer.vocab_size=100", "missing required key tokenizer.corpus")]:
        with pytest.raises(ConfigError, match=message):
            load_config(PipelineConfig, str(path), [override, *(["tokenizer.corpus=[a.txt]"] if "style" in override else [])])


def test_lm_eval_section_evaluates_the_final_model_beside_every_earlier_one(project):
    project["eval_lm_eval"] = {"tasks": ["recipes/eval/chatbaker_english.yaml"], "shots": [0, 5]}
    pipeline = Pipeline(from_dict(PipelineConfig, project), [], lambda _: None)
    cfg = pipeline.resolve("eval_lm_eval")
    assert (cfg.model, cfg.baselines) == (str(pipeline.out("dpo")), [str(pipeline.out("sft")), project["base_model"]])
    assert (cfg.out, cfg.tasks, cfg.shots) == (str(pipeline.out("eval")), project["eval_lm_eval"]["tasks"], [0, 5])
    assert pipeline.cfg.stages()[-2:] == ["eval_lm_eval", "eval_generate"]


def test_check_prints_ok_per_stage_and_runs_nothing(project, tmp_path, capsys):
    lines: list[str] = []
    assert run(from_dict(PipelineConfig, project), check=True, log=lines.append) is None
    assert [line.split()[:2] for line in lines[1:]] == [[s, "OK"] for s in ("check", "sft", "dpo", "eval_generate")]
    assert not os.path.exists(project["run_dir"])
    project["dpo"]["set"] = {"train.bogus": 1}  # the same through the command line: one line, exit code 1
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(project))
    assert main(["pipeline", str(path), "--check"]) == 1
    assert "stage dpo: pipeline dpo.set.train.bogus: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(p.name for p in REPO.joinpath("recipes").glob("*.yaml")
                                          if p.read_text(encoding="utf-8").startswith("# kotune pipeline")))
def test_every_shipped_pipeline_checks_out(recipe, monkeypatch, tmp_path):
    """Every stage of every shipped pipeline, with its recipe, `set:` and wired paths, builds (as `--check` does)."""
    monkeypatch.chdir(REPO)
    cfg = load_config(PipelineConfig, f"recipes/{recipe}", [f"run_dir={tmp_path / 'run'}"])
    lines = Pipeline(cfg).validate()
    assert [line.split()[0] for line in lines] == cfg.stages()
