"""Resumable checkpoints that a kill can never leave half-written.

A checkpoint is written into `step-N.tmp`, flushed to disk and then renamed to `step-N`; `state.json` is
the last file written. A folder counts as a checkpoint only under its final name with `state.json` inside,
so a kill at any moment leaves the newest complete checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

_STEP_DIR = re.compile(r"step-(\d+)")


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def begin_checkpoint(root: str | Path, step: int) -> Path:
    """An empty staging folder for the checkpoint of `step` (a leftover from a killed save is removed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def publish_checkpoint(root: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write `state.json` last, flush everything, and rename the staging folder to `root/step-N`.

    Args:
        state: small JSON state (step, epoch, ...).
        keep: older checkpoints beyond this many are removed once the new one is in place.
    """
    root = Path(root)
    tmp = root / f"step-{step:07d}.tmp"
    final = root / f"step-{step:07d}"
    (tmp / "state.json").write_text(json.dumps(state))
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_tree(root)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.fullmatch(p.name).group(1)))


def latest_checkpoint(root: str | Path) -> tuple[Path, dict] | None:
    """The newest complete checkpoint and its state, or None."""
    found = list_checkpoints(root)
    return (found[-1], json.loads((found[-1] / "state.json").read_text())) if found else None
