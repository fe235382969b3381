"""Experiment tracking (`train.report_to`): TensorBoard, W&B, MLflow, trackio, for every training stage.

kotune's own loops (SFT, pre-training, PPO) log through accelerate's trackers; the TRL-backed stages (reward, DPO,
RLOO/GRPO) through TRL's `report_to`. Either way the metrics are the rows of metrics.jsonl, the resolved config is
logged with them, and nothing needs a network: TensorBoard writes OUTPUT_DIR/tensorboard, and W&B runs offline
(files under OUTPUT_DIR/wandb, `wandb sync` uploads them later) unless WANDB_API_KEY is set.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import yaml

from kotune.common.options import opt
from kotune.config import to_dict

# name in report_to -> the Python package it needs
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
TENSORBOARD_DIR = "tensorboard"  # under the stage's output folder
PROJECT = "kotune"  # W&B and trackio project, MLflow experiment; the run is named after the output folder


def report_to_option():
    """The `report_to` field every training stage's `train` section has."""
    return opt([], f"experiment trackers, any of {', '.join(TRACKERS)}; none by default. TensorBoard writes "
                   f"OUTPUT_DIR/{TENSORBOARD_DIR}; W&B runs offline unless WANDB_API_KEY is set")


def check_report_to(names: list[str]) -> None:
    """Unknown trackers and trackers whose package is missing fail when the recipe is read, before training."""
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"report_to: unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ValueError(f"report_to: {name} needs the {TRACKERS[name]} package: pip install {TRACKERS[name]}")
    if len(set(names)) != len(names):
        raise ValueError(f"report_to: a tracker is named twice in {names}")


def flat_config(cfg) -> dict:
    """The resolved config as one level of dotted keys with scalar values, as TensorBoard's hparams need."""

    def walk(prefix: str, value, into: dict) -> dict:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item, into)
        elif isinstance(value, (list, tuple)):
            into[prefix] = json.dumps(value, ensure_ascii=False)
        elif value is None:
            into[prefix] = "null"
        else:
            into[prefix] = value
        return into

    return walk("", to_dict(cfg), {})


def _offline_wandb(out: Path) -> None:
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ["WANDB_DIR"] = str(out)  # this stage's folder; wandb makes OUTPUT_DIR/wandb
    out.mkdir(parents=True, exist_ok=True)


def accelerate_trackers(names: list[str], out: Path) -> list:
    """accelerate tracker objects for `names`, for `Accelerator(log_with=...)` or `Tracking`."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, TensorBoardTracker

    trackers = []
    for name in names:
        if name == "tensorboard":  # run name "": the event files go straight into OUTPUT_DIR/tensorboard
            trackers.append(TensorBoardTracker("", out / TENSORBOARD_DIR))
        elif name == "wandb":
            _offline_wandb(out)
            trackers.append(LOGGER_TYPE_TO_CLASS[name](PROJECT, name=out.name, dir=str(out)))
        elif name == "mlflow":
            trackers.append(LOGGER_TYPE_TO_CLASS[name](PROJECT, run_name=out.name))
        else:
            trackers.append(LOGGER_TYPE_TO_CLASS[name](PROJECT, name=out.name))
    return trackers


def numeric(row: dict) -> dict:
    """The numbers of a metrics row (trackers take no None; `step` is passed as the step)."""
    return {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracking:
    """accelerate's trackers without an Accelerator, for a loop that has none (PPO); the first process logs."""

    def __init__(self, names: list[str], out: Path, cfg):
        self.trackers = accelerate_trackers(names, out)
        for tracker in self.trackers:
            tracker.start()
            tracker.store_init_configuration(flat_config(cfg))

    def log(self, row: dict) -> None:
        for tracker in self.trackers:
            tracker.log(numeric(row), step=row["step"])

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def trl_report_to(names: list[str], out: Path) -> dict:
    """TrainingArguments for TRL's own integrations, writing where kotune's loops do."""
    if not names:
        return {"report_to": "none"}
    if "tensorboard" in names:
        # transformers 5 takes the folder from the environment only; set per stage, so a pipeline's stages each
        # write their own folder.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / TENSORBOARD_DIR)
    if "wandb" in names:
        _offline_wandb(out)
    return {"report_to": list(names), "run_name": out.name}


def trl_config_callbacks(cfg, out: Path) -> list:
    """Callbacks logging kotune's resolved config in the trackers of `cfg.train.report_to` (TRL's integrations log
    only TRL's arguments): text in TensorBoard, the W&B run's config, an MLflow artifact. trackio takes a config only
    when TRL's callback starts its run; there the resolved config is the config.yaml beside the outputs."""
    names = cfg.train.report_to
    if not names:
        return []
    from transformers import TrainerCallback

    class _Config(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            # Called after the integrations' on_train_begin (their callbacks come first): their runs are open.
            if not state.is_world_process_zero:
                return
            if "tensorboard" in names:
                from torch.utils.tensorboard import SummaryWriter

                with SummaryWriter(str(out / TENSORBOARD_DIR)) as writer:
                    text = yaml.safe_dump(to_dict(cfg), allow_unicode=True, sort_keys=False)
                    writer.add_text("kotune_config", f"```yaml\n{text}```")
            if "wandb" in names:
                import wandb

                wandb.run.config.update({"kotune": flat_config(cfg)}, allow_val_change=True)
            if "mlflow" in names:
                import mlflow

                mlflow.log_dict(to_dict(cfg), "kotune_config.json")

    return [_Config()]
