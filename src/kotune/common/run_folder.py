"""One run per output folder: a fresh run never mixes with another run's outputs, a resume only continues its own.

A training stage writes `run.json` (the run's identity: model, data files, method, batch sizes, ...) into its
output folder when it starts, and every step checkpoint carries the same identity in its `state.json`. Then:

- a fresh run into a folder that already holds outputs or checkpoints refuses, naming the ways out
  (`--overwrite`, `train.resume=true`, another `output_dir`); `overwrite` clears the folder first;
- a resume compares the newest checkpoint's identity with this run's and refuses, listing what differs, or says
  which step it continues from; a resume with no checkpoint says it starts from step 0.

Without this, rerunning into a used folder overwrote the model and metrics but kept the older run's checkpoints,
and a later resume silently continued the older run (issue 22).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from kotune.common.checkpoint import latest_checkpoint
from kotune.common.outputs import CONFIG_YAML, DATA_REPORT_JSON
from kotune.common.quiet import LOG_FILE, attach_log_file

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
# What marks a folder as one kotune wrote: only such a folder is cleared by `overwrite`.
_RUN_MARKERS = (RUN_FILE, CONFIG_YAML)
# What a run writes before its first step: a run that stopped there (a wrong model path, bad data) left nothing to
# mix with, and a new run into its folder is not refused.
_BEFORE_TRAINING = (RUN_FILE, CONFIG_YAML, DATA_REPORT_JSON, LOG_FILE)


class RunFolderError(ValueError):
    """The output folder holds another run, or a resume does not fit its checkpoint; the message says what to do."""


def file_identity(path: str | Path) -> dict:
    """A data file as the run saw it: absolute path and size (a changed file changes its size in practice; hashing
    a pre-training corpus of many GB on every start would not pay)."""
    p = Path(path).expanduser()
    return {"path": str(p.resolve()), "bytes": p.stat().st_size if p.is_file() else None}


def model_identity(name: str | None) -> str | None:
    """A local model folder as its absolute path (a relative one names another folder elsewhere); a hub id as is."""
    p = Path(name or "").expanduser()
    return str(p.resolve()) if name is not None and p.exists() else name


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json")


def model_fingerprint(folder: str | Path) -> str | None:
    """A cheap content fingerprint of a local model folder: its config.json bytes and the
    names and sizes of its weight files. A copy of the folder has the same one; other weights almost never do.
    None for anything that is not a folder (a hub id)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    if (folder / "config.json").is_file():
        digest.update((folder / "config.json").read_bytes())
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES) and ("model" in p.name or "adapter" in p.name):
            digest.update(f"{p.name}:{p.stat().st_size};".encode())
    return digest.hexdigest()[:16]


# Settings a checkpoint must share with the run resuming it: what the model starts from, the examples and their
# order (data, seed, batch sizes), and the trained parameters (method, LoRA shape). Learning rate, max_steps and
# logging may change between a run and its resume.
_IDENTITY_TRAIN_KEYS = ("global_batch_size", "micro_batch_size", "seed")


def run_identity(stage: str, cfg) -> dict:
    """The identity of a training stage's run from its config dataclass (see the module docstring)."""
    d = dataclasses.asdict(cfg)
    data = dict(d.get("data") or {})
    for key in ("files", "eval_files"):
        if key in data:
            data[key] = [file_identity(f) for f in data[key]]
    identity = {
        "stage": stage, "model": model_identity(d.get("model")), "tokenizer": model_identity(d.get("tokenizer")),
        "model_fingerprint": model_fingerprint(d["model"]) if d.get("model") else None, "data": data,
        "train": {k: d.get("train", {}).get(k) for k in _IDENTITY_TRAIN_KEYS},
    }
    for key in ("reward_model", "init", "method", "algo"):
        if key in d:
            identity[key] = model_identity(d[key]) if key == "reward_model" else d[key]
    if d.get("method", "full") != "full":
        identity["lora"] = d.get("lora")
    return identity


def _flatten(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix.rstrip("."): value}
    return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}


def identity_differences(recorded: dict, current: dict) -> list[str]:
    """`key: recorded -> current` for every setting that differs (nested keys dotted)."""
    old, new = _flatten(recorded), _flatten(current)
    return [f"{key}: {old.get(key)!r} (checkpoint) vs {new.get(key)!r} (now)"
            for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


def _leftovers(out: Path, keep: tuple[str, ...]) -> list[str]:
    if not out.is_dir():
        return []
    found = sorted(p.name for p in out.iterdir() if p.name not in keep)
    return [] if set(found) <= set(_BEFORE_TRAINING) else found


_FIXES = ("add --overwrite (or overwrite=true) to clear it and start again, train.resume=true to continue the run it "
          "holds from its newest checkpoint, or set another output_dir")


def prepare_run_folder(out: str | Path, identity: dict, *, resume: bool = False, overwrite: bool = False,
                       keep: tuple[str, ...] = (), log=print) -> tuple[Path, dict] | None:
    """Check (and with `overwrite`, clear) `out` for a run with `identity`, then write `run.json`.

    Call on the main process only, before the run writes anything.

    Args:
        identity: JSON-able settings that must match for a checkpoint to be resumed.
        resume: continue from the newest checkpoint in `out/checkpoints` (stages with a resumable loop).
        overwrite: remove whatever an earlier run left in `out` (but the names in `keep`).
        keep: entries that are caches valid across runs (pre-training's `tokens/`, keyed by corpus and tokenizer).

    Returns:
        The checkpoint to resume from and its state, or None for a fresh start.

    Raises:
        RunFolderError: the folder holds another run and neither `resume` nor `overwrite` is set; the checkpoint
            belongs to another configuration; `overwrite` on a folder kotune did not write.
    """
    out = Path(out)
    identity = json.loads(json.dumps(identity))  # compare as it is stored (tuples become lists)
    if resume and overwrite:
        raise RunFolderError("train.resume=true and overwrite=true contradict each other: resume continues the run in "
                             f"{out}, overwrite deletes it; choose one")
    leftovers = _leftovers(out, keep)
    found = None
    if overwrite and leftovers:
        if not any((out / marker).exists() for marker in _RUN_MARKERS):
            raise RunFolderError(f"overwrite: {out} holds {', '.join(leftovers[:5])} but no config.yaml or {RUN_FILE}, so "
                                 "kotune did not write it; remove its contents yourself or choose another output_dir")
        for name in leftovers:
            target = out / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        log(f"overwrite: cleared what the earlier run left in {out} ({', '.join(leftovers[:6])}"
            f"{', ...' if len(leftovers) > 6 else ''})")
    elif resume:
        found = latest_checkpoint(out / CHECKPOINTS)
        if found is None:
            log(f"train.resume=true but {out / CHECKPOINTS} holds no complete checkpoint: starting from step 0")
            if leftovers and (out / RUN_FILE).is_file():
                _check_identity(json.loads((out / RUN_FILE).read_text()), identity, out / RUN_FILE)
        else:
            recorded = found[1].get("run")
            if recorded is None:
                raise RunFolderError(f"{found[0]}: this checkpoint has no run record (written by an older kotune), so "
                                     "it cannot be checked against this configuration; start again with --overwrite")
            _check_identity(recorded, identity, found[0])
            log(f"resuming from {found[0]} (step {found[1]['step']}): the checkpoint matches this configuration")
    elif leftovers:
        what = "checkpoints and outputs" if (out / CHECKPOINTS).is_dir() else "outputs"
        raise RunFolderError(f"output_dir {out} already holds another run's {what} ({', '.join(leftovers[:6])}"
                             f"{', ...' if len(leftovers) > 6 else ''}); {_FIXES}")
    out.mkdir(parents=True, exist_ok=True)
    if found is None and (out / LOG_FILE).is_file():
        (out / LOG_FILE).unlink()  # a fresh start's log holds only this run
    (out / RUN_FILE).write_text(json.dumps(identity, ensure_ascii=False, indent=1))
    attach_log_file(out)  # what the libraries say during the run (kept off the terminal) goes to libraries.log
    return found


def _check_identity(recorded: dict, identity: dict, where: Path) -> None:
    differences = identity_differences(recorded, identity)
    if differences:
        raise RunFolderError(f"cannot resume from {where}: it belongs to a run with other settings:\n  "
                             + "\n  ".join(differences)
                             + "\nresume with the same settings, or start again with --overwrite or another output_dir")


def check_resume_step(found: tuple[Path, dict], total_steps: int) -> None:
    """A checkpoint at or past this run's last step would train nothing and save the checkpoint's weights as if
    they were this run's."""
    step = found[1]["step"]
    if step >= total_steps:
        raise RunFolderError(f"cannot resume from {found[0]}: it is at step {step}, and this run has {total_steps} "
                             "step(s), so nothing would be trained; raise train.max_steps (or epochs), or start again "
                             "with --overwrite")
