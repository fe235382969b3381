"""Names of the files a stage leaves in its run folder that other code reads back (the pipeline report, the run
folder's checks). Writers and readers both take them from here, so renaming one cannot break the other."""

from __future__ import annotations

CONFIG_YAML = "config.yaml"  # the resolved recipe
METRICS_JSONL = "metrics.jsonl"  # one row per logged optimizer step
DATA_REPORT_JSON = "data_report.json"  # SFT: what the data became (formats, skipped records, token statistics)
EVAL_JSON = "eval.json"  # pre-training: held-out perplexity before and after
LOSS_PNG = "loss.png"  # curves of kotune's own loop (SFT, pre-training)
CURVES_PNG = "curves.png"  # curves of the reward, DPO-family and online RL stages
TRAINER_SCRATCH = "trainer"  # the output_dir TRL trainers are given; removed when they leave it empty

# Per stage: its curves, and the report the SFT, reward, DPO and RL stages write (`<stage>_report.json`).
STAGE_CURVES = {"pretrain": LOSS_PNG, "sft": LOSS_PNG, "reward": CURVES_PNG, "ppo": CURVES_PNG, "dpo": CURVES_PNG}
STAGE_REPORTS = {stage: f"{stage}_report.json" for stage in ("sft", "reward", "ppo", "dpo")}
