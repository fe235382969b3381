"""TRL as the backend of the reward and DPO-family stages: arguments, metrics, and pre-tokenized data.

TRL's trainers tokenize text themselves (prompt and prompt+reply tokenized together, BOS/EOS added by their own
rules), which differs from SFT's masking in corner cases (a second BOS on LLaMA, merges across the prompt/reply
boundary). We hand them ids made by `kotune.preference.pairs`, so the tokens are exactly SFT's: RewardTrainer
accepts `chosen_ids`/`rejected_ids` as they are; for DPO, KTO, ORPO and CPO (SimPO) the small subclasses below
only skip TRL's tokenization step and keep everything else (losses, reference handling, logging) TRL's.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from kotune.common.metrics import MetricsLog
from kotune.common.outputs import METRICS_JSONL
from kotune.preference.models import trl_precision_args
from kotune.training import stage as training_stage
from kotune.training.distributed import env_flag, launch_world_size
from kotune.training.tracking import trl_report_to


def start_stage(cfg, stage: str, log=print) -> training_stage.StageContext:
    """`kotune.training.stage.start_stage` for a TRL-backed stage, which runs with DDP only."""
    sharded = env_flag("ACCELERATE_USE_FSDP") or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    if sharded:  # the first process saves and checks the model from its own copy of the weights: sharded, a part
        raise ValueError("the reward, DPO and RLOO/GRPO stages run with DDP (torchrun, --nproc, recipes/accelerate/"
                         "ddp.yaml), not with FSDP or ZeRO-3; for a model too large for that, use method=lora")
    return training_stage.start_stage(cfg, stage, log)


def training_args(config_cls, train, output_dir: str | Path, precision: str, **extra):
    """A TRL `*Config` from our `OptimConfig`: global batch = micro batch x processes x accumulation."""
    # Not PartialState's count: on CPU it says 1 before TRL sets up torch.distributed (a batch N times too large).
    world = launch_world_size()
    per_step = train.micro_batch_size * world
    if train.global_batch_size % per_step:
        raise ValueError(f"train.global_batch_size ({train.global_batch_size}) must be a multiple of micro_batch_size x "
                         f"processes ({per_step})")
    return config_cls(
        output_dir=str(output_dir),
        per_device_train_batch_size=train.micro_batch_size,
        per_device_eval_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.global_batch_size // per_step,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps if train.max_steps is not None else -1,
        learning_rate=train.learning_rate,
        lr_scheduler_type={"constant": "constant_with_warmup"}.get(train.lr_scheduler, train.lr_scheduler),
        warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm if train.max_grad_norm > 0 else math.inf,
        seed=train.seed,
        # transformers 5 renamed it; the new name wins over TRL's default of True for the old one
        activation_checkpointing=train.gradient_checkpointing,
        logging_steps=train.log_every,
        save_strategy="no",  # the stage saves the final model itself, in the layout users load
        # output_dir is the stage folder's trainer/ scratch folder; trackers write into the stage folder
        **trl_report_to(train.report_to, Path(output_dir).parent),
        remove_unused_columns=False,
        **trl_precision_args(precision),
        **extra,
    )


def announce_processes(trainer, desc: str) -> None:
    """Every process says it is there, as the SFT loop does: a launch that silently started one shows no line.
    The trainer's progress display becomes SFT's (see `_progress_callback`)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_progress_callback(desc))
    accelerator = trainer.accelerator
    if accelerator.num_processes > 1:
        print(f"process {accelerator.process_index} of {accelerator.num_processes} "
              f"({accelerator.distributed_type.value})", flush=True)


# TRL's log names -> the names SFT's loop writes (metrics.jsonl, progress bar), so every stage reads alike.
METRIC_NAMES = {"learning_rate": "lr"}


def _progress_callback(desc: str):
    """SFT's progress bar for a TRL trainer: `desc`, steps, and the loss as a postfix. Replaces transformers'
    bar, which prints every log row as a raw dict with its numbers as strings."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=desc, unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and isinstance(logs.get("loss"), (int, float)):
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return _Progress()


def metrics_callback(out: str | Path):
    """A TrainerCallback writing every training log row (not the end-of-run summary) to `out`/metrics.jsonl."""
    from transformers import TrainerCallback

    class _Metrics(TrainerCallback):
        def __init__(self) -> None:
            self.log = MetricsLog(Path(out) / METRICS_JSONL)
            self.rows: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "train_runtime" in logs:
                return
            row = {"step": state.global_step,
                   **{METRIC_NAMES.get(k, k): v for k, v in logs.items() if isinstance(v, (int, float))}}
            self.rows.append(row)
            self.log.write(row)

    return _Metrics()


def pair_dataset(pairs):
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt_ids": [p.prompt_ids for p in pairs],
        "chosen_ids": [p.chosen_ids for p in pairs],
        "rejected_ids": [p.rejected_ids for p in pairs],
    })


def reward_dataset(pairs):
    from datasets import Dataset

    return Dataset.from_dict({"chosen_ids": [p.chosen_sequence for p in pairs],
                              "rejected_ids": [p.rejected_sequence for p in pairs]})


def unpaired_dataset(pairs):
    """KTO's unpaired form: each pair gives its chosen reply as desirable and its rejected reply as undesirable."""
    from datasets import Dataset

    rows = {"prompt_ids": [], "completion_ids": [], "label": []}
    for p in pairs:
        for ids, label in ((p.chosen_ids, True), (p.rejected_ids, False)):
            rows["prompt_ids"].append(p.prompt_ids)
            rows["completion_ids"].append(ids)
            rows["label"].append(label)
    return Dataset.from_dict(rows)


def legacy_pair_dataset(pairs):
    """The columns ORPOTrainer/CPOTrainer's `tokenize_row` produces, built from our ids (labels mask the prompt)."""
    from datasets import Dataset

    from kotune.common.losses import IGNORE_INDEX

    cols: dict[str, list] = {k: [] for k in (
        "prompt_input_ids", "prompt_attention_mask", "chosen_input_ids", "chosen_attention_mask", "chosen_labels",
        "rejected_input_ids", "rejected_attention_mask", "rejected_labels")}
    for p in pairs:
        cols["prompt_input_ids"].append(p.prompt_ids)
        cols["prompt_attention_mask"].append([1] * len(p.prompt_ids))
        for side, reply in (("chosen", p.chosen_ids), ("rejected", p.rejected_ids)):
            cols[f"{side}_input_ids"].append(p.prompt_ids + reply)
            cols[f"{side}_attention_mask"].append([1] * (len(p.prompt_ids) + len(reply)))
            cols[f"{side}_labels"].append([IGNORE_INDEX] * len(p.prompt_ids) + reply)
    return Dataset.from_dict(cols)


def pretokenized_dpo():
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer on `prompt_ids`/`chosen_ids`/`rejected_ids` made by kotune (no re-tokenization)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return PretokenizedDPOTrainer


def pretokenized_kto():
    from trl import KTOTrainer

    class PretokenizedKTOTrainer(KTOTrainer):
        """KTOTrainer on `prompt_ids`/`completion_ids`/`label` made by kotune.

        What TRL's `_prepare_dataset` does after tokenizing is kept: the KL term's mismatched completions are the
        batch's completions rotated by one (TRL 1.16 `kto_trainer.py`, `add_kl_completion_ids`).
        """

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if not self.calculate_KL:
                return dataset

            def add_kl(examples):
                examples["KL_completion_ids"] = [examples["completion_ids"][-1]] + examples["completion_ids"][:-1]
                return examples

            return dataset.map(add_kl, batched=True, batch_size=args.per_device_train_batch_size)

    return PretokenizedKTOTrainer


def pretokenized_legacy(trainer_cls):
    """ORPOTrainer / CPOTrainer (trl.experimental) on columns from `legacy_pair_dataset`."""

    class Pretokenized(trainer_cls):
        def tokenize_row(self, feature, model=None):
            return feature

    Pretokenized.__name__ = f"Pretokenized{trainer_cls.__name__}"
    return Pretokenized
