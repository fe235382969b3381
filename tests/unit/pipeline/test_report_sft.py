"""The pipeline report's SFT rows: held-out loss before and after with intervals, and a plain verdict."""

import json

from kotune.common.outputs import STAGE_REPORTS
from kotune.pipeline.report import _sft_held_out
from kotune.training.held_out import before_after


def write_report(run_dir, held_out):
    (run_dir / "sft").mkdir(parents=True, exist_ok=True)
    (run_dir / "sft" / STAGE_REPORTS["sft"]).write_text(json.dumps({"held_out": held_out}))


def test_report_shows_before_after_with_intervals_and_says_whether_sft_changed_anything(tmp_path):
    tokens = [12, 40, 7, 33, 25, 18, 9, 51, 30, 22]
    before = [n * (4.0 + 0.1 * (i % 3)) for i, n in enumerate(tokens)]
    lowered = [b - n * 0.8 for b, n in zip(before, tokens)]
    write_report(tmp_path, {"examples": 10, **before_after((before, tokens), (lowered, tokens), seed=0)})
    text = "\n".join(_sft_held_out(tmp_path))
    assert "| before SFT (the model it started from) | 4.0" in text and "| after SFT | 3.2" in text
    assert "| change (paired, per example) | -0.8000 [-0.8000, -0.8000] |" in text
    assert "SFT lowered held-out response loss" in text and f"{sum(tokens):,} tokens" in text

    write_report(tmp_path, before_after((before, tokens), (before, tokens), seed=0))
    assert "SFT changed nothing measurable in held-out response loss" in "\n".join(_sft_held_out(tmp_path))

    write_report(tmp_path, {"examples": 0, "none": "only 4 distinct prompt(s); at least 10 are needed to hold some out"})
    assert _sft_held_out(tmp_path)[0] == ("SFT held-out loss: not measured (only 4 distinct prompt(s); at least 10 are "
                                          "needed to hold some out).")
