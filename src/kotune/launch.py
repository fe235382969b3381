"""`kotune STAGE RECIPE --nproc N [--accelerate-config FILE]`: the same command, re-run under a launcher.

A shortcut for the launch users would type themselves; the child processes are plain `kotune.cli` runs that
accelerate (through `kotune.training.distributed`) or TRL turn into DDP, FSDP2 or DeepSpeed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path


def launch_refusal(cfg) -> str | None:
    """Why this stage config cannot run on several processes (a config says so in `multi_process_error`), or None."""
    return getattr(cfg, "multi_process_error", lambda: None)()


def launch_command(stage_args: list[str], nproc: int | None, accelerate_config: str | None) -> list[str]:
    """torchrun (DDP) without a config; `accelerate launch --config_file` with one (its num_processes unless N)."""
    if accelerate_config is not None:
        if not Path(accelerate_config).is_file():
            raise FileNotFoundError(f"--accelerate-config: no such file: {accelerate_config} (see recipes/accelerate/)")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config]
        if nproc is not None:
            cmd += ["--num_processes", str(nproc)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return [*cmd, "-m", "kotune.cli", *stage_args]


def relaunch(stage_args: list[str], nproc: int | None, accelerate_config: str | None) -> int:
    if nproc is not None and nproc < 1:
        raise ValueError(f"--nproc: must be at least 1, got {nproc}")
    if "LOCAL_RANK" in os.environ:
        raise ValueError("--nproc / --accelerate-config given inside a launched process: drop them, or drop the "
                         "outer torchrun / accelerate launch")
    cmd = launch_command(stage_args, nproc, accelerate_config)
    print("launching: " + shlex.join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)
