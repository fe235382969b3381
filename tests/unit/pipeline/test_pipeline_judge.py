"""The pipeline's `eval_judge` stage: the final model against every model the run made and each listed endpoint,
validated with the rest before any stage runs, and its tables in the pipeline report."""

from __future__ import annotations

import pytest

from kotune.config import ConfigError, from_dict
from kotune.pipeline.config import PipelineConfig

from test_rerun import FakePipeline, project  # noqa: F401  (the fixture)

JUDGE = {"judge_url": "http://127.0.0.1:9/v1", "judge_model": "judge", "judge_key_env": None}


class JudgingPipeline(FakePipeline):
    def _body(self, stage: str, cfg) -> None:
        super()._body(stage, cfg)
        if stage == "eval_judge":
            (self.out("eval_judge") / "judge.md").write_text("# Pairwise judging\n\n| model | opponent |\n\n![win rates](judge.png)\n")


def test_the_final_model_meets_every_stage_model_and_the_endpoints(project):
    project["eval_judge"] = {**JUDGE, "endpoints": ["gpt-4o-mini@https://api.openai.com/v1@OPENAI_API_KEY"]}
    pipeline = JudgingPipeline(from_dict(PipelineConfig, project), [], lambda _: None)
    cfg = pipeline.resolve("eval_judge")
    run_dir = project["run_dir"]
    assert cfg.models == [f"{run_dir}/dpo", f"{run_dir}/sft"]  # the final model first; not the base model
    assert cfg.endpoints == project["eval_judge"]["endpoints"]
    assert cfg.out == f"{run_dir}/eval" and cfg.questions.endswith("judge/questions.jsonl")
    report = pipeline.run().read_text(encoding="utf-8")
    assert "## Pairwise judging" in report and "![win rates](eval/judge.png)" in report


def test_a_judge_section_with_one_contestant_fails_before_any_stage(project):
    del project["dpo"]
    project["eval_judge"] = dict(JUDGE)
    pipeline = JudgingPipeline(from_dict(PipelineConfig, project), [], lambda _: None)
    with pytest.raises(ConfigError, match="at least two contestants"):
        pipeline.run()
    assert pipeline.calls == []
    with pytest.raises(ConfigError, match="judge_url: 'localhost' is not an http"):
        from_dict(PipelineConfig, {**project, "eval_judge": {**JUDGE, "judge_url": "localhost"}})
