"""The `Accelerator` of a launch: one process, DDP, FSDP2 or DeepSpeed ZeRO, as `accelerate launch --config_file`
(recipes/accelerate/) or `torchrun` asked. accelerate does the distributed work; this module only closes two gaps
it has on CPU-only machines, so that the tests run the same FSDP and DeepSpeed code paths users run on GPUs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kotune.data.batching import micro_batches_per_rank
from kotune.common.device import resolve_precision
from kotune.training.config import TrainConfig
from kotune.training.tracking import accelerate_trackers


def make_accelerator(cfg: TrainConfig, output_dir: Path | None = None):
    """The launch's Accelerator, logging to the trackers of `cfg.report_to` (their files under `output_dir`)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs, TorchDynamoPlugin

    precision = resolve_precision(cfg.precision)
    mixed_precision = {"fp32": "no"}.get(precision, precision)  # the recipe decides, not the launch config
    cpu_only = not torch.cuda.is_available()
    deepspeed = env_flag("ACCELERATE_USE_DEEPSPEED")
    handlers = []
    if cpu_only and deepspeed:
        # accelerate knows no process-group backend for DeepSpeed without a GPU; DeepSpeed's CPU accelerator uses gloo.
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    # Otherwise, on a CPU-only machine accelerate recognises a torchrun launch as multi-process (gloo) only with
    # cpu=True.
    log_with = accelerate_trackers(cfg.report_to, Path(output_dir)) if cfg.report_to and output_dir else None
    # train.compile: accelerate compiles the model in prepare(); dynamic shapes, as padded batches vary in length.
    dynamo = {"dynamo_plugin": TorchDynamoPlugin(backend="inductor", dynamic=True)} if cfg.compile else {}
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu_only and not deepspeed, kwargs_handlers=handlers,
                              log_with=log_with, **dynamo)
    if accelerator.distributed_type == DistributedType.MULTI_CPU and env_flag("ACCELERATE_USE_FSDP"):
        _enable_fsdp2_on_cpu(accelerator, mixed_precision)
    return accelerator


def launch_world_size() -> int:
    """Processes in this launch, as torchrun / accelerate launch announce them (1 without a launcher).

    Read from the environment: accelerate's PartialState, asked before a trainer sets up torch.distributed,
    reports one process on a CPU-only machine."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_first_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def close_process_group() -> None:
    """End a multi-process launch cleanly: wait for every process, then destroy the process group.

    The TRL stages return early on every process but the first, which still saves the model. A process that exits
    while the others still use the group can abort in gloo's teardown ("terminate called without an active
    exception", SIGABRT), failing a launch whose work had succeeded. Called once, after a command succeeded.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def env_flag(name: str) -> bool:
    """An on/off variable as `accelerate launch` writes them (true/false)."""
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def _enable_fsdp2_on_cpu(accelerator, mixed_precision: str) -> None:
    """Make an FSDP launch on CPU train with FSDP instead of silently with DDP.

    accelerate 1.15 turns on FSDP only for GPU-like distributed types: on CPU an FSDP config quietly trains with
    DDP, every process holding the whole model. Its FSDP2 code (torch `fully_shard` over a gloo mesh) runs on CPU
    as it is, so we hand it the plugin the launch described. FSDP1 is refused: on CPU it needs a `device_id`
    accelerate does not pass.
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables `accelerate launch` set from the config
    if plugin.fsdp_version != 2:
        raise ValueError("FSDP on CPU needs fsdp_version: 2 (recipes/accelerate/fsdp2.yaml); FSDP1 runs on GPUs only")
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    # Both shared states: every later AcceleratorState() copies the process state's type over its own.
    PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP


def configure_deepspeed(accelerator, cfg: TrainConfig) -> None:
    """Batch sizes and clipping of a DeepSpeed launch come from the recipe, like every other launch.

    DeepSpeed keeps its own copy of them (it checks train_batch = micro x accumulation x processes, and clips
    inside its engine step); values in the DeepSpeed config are replaced, so one recipe trains alike everywhere.
    """
    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    accumulation = micro_batches_per_rank(cfg.global_batch_size, accelerator.num_processes, cfg.micro_batch_size)
    ds_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    ds_config["gradient_accumulation_steps"] = accumulation
    ds_config["train_batch_size"] = cfg.micro_batch_size * accumulation * accelerator.num_processes
    ds_config["gradient_clipping"] = cfg.max_grad_norm
