"""Loss curves a person can read: at most three panels in a row, held-out curves beside the training ones."""

import json

from PIL import Image

from kotune.common.metrics import PANELS_PER_ROW, curve_panels, plot_curves, read_metrics

DPO_KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "grad_norm"]


def write_dpo_metrics(path):
    rows = [{"step": s, "loss": 0.7 - 0.01 * s, "rewards/chosen": 0.01 * s, "rewards/rejected": -0.01 * s,
             "rewards/margins": 0.02 * s, "rewards/accuracies": 0.5, "grad_norm": 4.0, "lr": 1e-4}
            for s in range(1, 21)]
    rows.append({"step": 10, "eval_loss": 0.66, "eval_rewards/margins": 0.15})  # TRL's held-out rows
    rows.append({"step": 20, "eval_loss": 0.62, "eval_rewards/margins": 0.30, "eval_runtime": 1.5})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_six_panels_wrap_into_two_rows_of_three(tmp_path):
    png = plot_curves(write_dpo_metrics(tmp_path / "metrics.jsonl"), tmp_path / "curves.png", DPO_KEYS, title="dpo")
    width, height = Image.open(png).size
    one_panel_width = 4.6 * 110
    assert PANELS_PER_ROW * one_panel_width * 0.95 <= width <= PANELS_PER_ROW * one_panel_width * 1.05
    assert height > 2 * 3.3 * 110 * 0.95  # two rows, not one
    assert width < 1600  # the six-panel row was 2,970 px wide


def test_held_out_curves_share_the_training_panel(tmp_path):
    rows = read_metrics(write_dpo_metrics(tmp_path / "metrics.jsonl"))
    panels = {key: (train, held_out) for key, train, held_out in curve_panels(rows, DPO_KEYS + ["missing"])}
    assert list(panels) == DPO_KEYS  # one panel per key with data; eval_* adds none of its own
    assert panels["loss"][1] == [(10, 0.66), (20, 0.62)] and len(panels["loss"][0]) == 20
    assert panels["rewards/margins"][1] == [(10, 0.15), (20, 0.30)]
    assert panels["grad_norm"][1] == []  # nothing held out: the training curve alone


def test_a_single_curve_is_one_panel(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 8.0 / s}) + "\n" for s in range(1, 5)))
    width, _ = Image.open(plot_curves(path, tmp_path / "loss.png", ["loss", "lr", "grad_norm"])).size
    assert width < 1.05 * 4.6 * 110
