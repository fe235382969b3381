"""One start and one finish for every training stage (SFT, pre-training, reward, DPO, PPO, RLOO/GRPO): the start
decides process role, run folder, seed, device, precision and tokenizer once; the finish saves model, tokenizer,
report and curves on the main process."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from kotune.common.device import resolve_device, resolve_precision
from kotune.common.metrics import plot_curves
from kotune.common.outputs import CONFIG_YAML, METRICS_JSONL, STAGE_CURVES, STAGE_REPORTS, TRAINER_SCRATCH
from kotune.common.run_folder import prepare_run_folder, run_identity
from kotune.config import save_config
from kotune.data.templates import install_template
from kotune.models.load import pin_adapter_base, stage_tokenizer
from kotune.training.distributed import is_first_process, make_accelerator


@dataclass
class StageContext:
    """What `start_stage` decided for a run."""

    stage: str  # sft, pretrain, reward, dpo or ppo: names the run in run.json and picks its output names
    out: Path
    identity: dict  # the run's identity (`run_identity`), also carried by its checkpoints
    is_main: bool  # the process that writes the run folder
    log: Callable  # prints on the main process only: once per launch, not once per process
    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16
    tokenizer: object
    template: str | None  # the chat template installed into the tokenizer; None for raw text (pre-training)
    accelerator: object | None = None  # the launch's Accelerator, for stages trained by kotune's loop


def start_stage(cfg, stage: str, log=print, *, accelerate: bool = False, keep: tuple[str, ...] = ()) -> StageContext:
    """Open a run of `stage` from its config (`cfg.output_dir`, `cfg.train.seed`, `cfg.train.precision`, ...).

    Args:
        accelerate: make the launch's Accelerator (kotune's loop), which then decides the process role and the
            device; without it the role is the launcher's RANK (TRL trainers make their accelerator later, too late
            to ask before the run folder is written).
        keep: entries of the run folder that `overwrite` keeps (pre-training's token cache).

    Raises:
        RunFolderError: the folder holds another run (see `kotune.common.run_folder`).
    """
    from accelerate.utils import set_seed

    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.train, out) if accelerate else None
    is_main = accelerator.is_main_process if accelerator is not None else is_first_process()
    say = log if is_main else (lambda *_args, **_kwargs: None)
    identity = run_identity(stage, cfg)
    if is_main:  # before anything is written: refuse a folder holding another run
        prepare_run_folder(out, identity, resume=getattr(cfg.train, "resume", False), overwrite=cfg.overwrite,
                           keep=keep, log=say)
        save_config(cfg, out / CONFIG_YAML)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    set_seed(cfg.train.seed)  # Python, NumPy and torch: initialisation (a new head), data order, dropout, sampling
    device = accelerator.device if accelerator is not None else torch.device(resolve_device())
    tokenizer = stage_tokenizer(cfg)
    template = install_template(tokenizer, cfg.data.template) if hasattr(cfg.data, "template") else None
    if template:
        say(f"template: {template}")
    return StageContext(stage, out, identity, is_main, say, device, resolve_precision(cfg.train.precision, device.type),
                        tokenizer, template, accelerator)


def finish_stage(ctx: StageContext, model, *, curves: list[str], title: str, report: dict | None = None,
                 report_file: str | None = None, adapter: bool = False,
                 after_save: Callable[[], dict] | None = None) -> None:
    """Save the trained model and the tokenizer into the run folder, then the report and the curves.

    Call on every process: under an accelerator the state dict is gathered first, collectively (FSDP and ZeRO-3
    shard it); the main process alone writes.

    Args:
        model: the trained model; a PeftModel saves only its adapter.
        curves: metrics of metrics.jsonl plotted into the stage's curves PNG (`STAGE_CURVES`).
        report: written as `report_file` (default: the stage's `<stage>_report.json`); None writes none.
        adapter: the model is a LoRA adapter: its base is pinned in the saved adapter config.
        after_save: checks of the saved folder, run before the report is written; what they return joins it.
    """
    accelerator, out = ctx.accelerator, ctx.out
    state_dict = {}
    if accelerator is not None:
        state_dict = {"state_dict": accelerator.get_state_dict(model)}
        model = accelerator.unwrap_model(model)
    if ctx.is_main:
        with contextlib.suppress(OSError):  # TRL creates its output_dir even with nothing to save there
            (out / TRAINER_SCRATCH).rmdir()
        model.save_pretrained(out, safe_serialization=True, **state_dict)
        if adapter:
            pin_adapter_base(out)
        ctx.tokenizer.save_pretrained(out)
        extra = after_save() if after_save is not None else {}
        if report is not None:
            text = json.dumps({**report, **extra}, ensure_ascii=False, indent=1)
            (out / (report_file or STAGE_REPORTS[ctx.stage])).write_text(text, encoding="utf-8")
        plot_curves(out / METRICS_JSONL, out / STAGE_CURVES[ctx.stage], curves, title=title)
    if accelerator is not None:
        accelerator.wait_for_everyone()
        accelerator.end_training()
