"""The pipeline report's held-out rows of the preference stages: intervals shown, and a plain sentence when a stage
changed nothing measurable."""

import json

from kotune.common.outputs import STAGE_REPORTS
from kotune.pipeline.report import _heldout_section
from kotune.preference.heldout import compare


def write(run_dir, stage, heldout):
    (run_dir / stage).mkdir(parents=True)
    (run_dir / stage / STAGE_REPORTS[stage]).write_text(json.dumps({"heldout": heldout}), encoding="utf-8")


def test_report_shows_intervals_and_says_when_nothing_changed(tmp_path):
    before = {"accuracy": [0.0, 1.0] * 20, "margin": [float(i % 5) for i in range(40)],
              "chosen_logprob": [-float(i % 3) - 10 for i in range(40)]}
    after = {"accuracy": [1.0] * 40, "margin": [m + 1 for m in before["margin"]],
             "chosen_logprob": before["chosen_logprob"]}
    write(tmp_path, "dpo", compare(before, after, before_is="runs/x/sft (the reference)"))
    write(tmp_path, "reward", compare(before, before, before_is="runs/x/sft with its new head"))
    write(tmp_path, "ppo", None)
    text = "\n".join(_heldout_section(tmp_path))
    assert "| preference accuracy | 0.500 [" in text and "| +0.500 [+0." in text and "] | changed |" in text
    assert "| chosen reply log-prob | -10.975 [" in text and "| +0.000 [+0.000, +0.000] | no measurable change |" in text
    assert "before = `runs/x/sft (the reference)`" in text
    assert "Held-out preference accuracy rose above the starting model's (0.500 → 1.000, difference 95% [+0." in text
    assert "Measurable change (interval of the difference excludes 0): preference accuracy, log-prob margin" in text
    assert "**reward changed nothing measurable on its held-out pairs**: every difference's 95% interval contains 0" in text
    assert "No held-out prompts (data.eval_fraction 0 and no data.eval_files)" in text
