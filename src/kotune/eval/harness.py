"""The one place kotune runs lm-evaluation-harness: load each model once, score it at every shot count.

`kotune eval kobest` (kotune's offline KoBEST tasks) and `kotune eval lm-eval` (any lm-eval task, by name or from a
folder of task YAMLs) differ only in which task configs they hand over and how they read the scores back; both
come through `evaluate_models` and `evaluate_lm`, so a model is loaded, wrapped and evaluated the same way in both.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kotune.common.device import resolve_device, resolve_precision
from kotune.eval.runs import unique_labels, write_json


def evaluate_lm(lm, tasks: Sequence, *, num_fewshot: int, limit: int | None, task_manager=None,
                log_samples: bool = False) -> dict:
    """One lm-eval run of `tasks` with `lm` (an lm-eval LM, e.g. HFLM); returns lm-eval's results dict
    (with every document's prompts and log-likelihoods under "samples" when `log_samples`).

    Args:
        tasks: task config dicts (functions resolved) and/or names known to `task_manager`.
        task_manager: lm-eval's TaskManager; by default one without lm-eval's bundled tasks
            (`include_defaults=False`), so it does not index thousands of YAMLs (seconds per run) and no bundled
            task can shadow a config passed here.
    """
    import lm_eval.evaluator
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # lm-eval records the git commit of the working directory by running `git describe`, whose "fatal: not a git
    # repository" goes straight to the terminal outside a checkout; the commit of the user's folder says nothing
    # about the scores, so none is recorded.
    lm_eval.evaluator.get_git_commit_hash = lambda: None
    return simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                           task_manager=task_manager or TaskManager(include_defaults=False), log_samples=log_samples)


def evaluate_models(cfg, *, run_once: Callable[[object, int], dict], scores: Callable[[dict, int], list[dict]],
                    raw_dir: Path, desc: str) -> tuple[list[dict], dict]:
    """Evaluate `cfg.model` and each of `cfg.baselines` at every shot count of `cfg.shots`.

    Args:
        cfg: a config with model, baselines, shots, batch_size, device, dtype and trust_remote_code.
        run_once: `(lm, shots) -> lm-eval results dict`, e.g. `evaluate_lm` on the command's tasks.
        scores: `(results, shots) -> rows` read from one results dict.
        raw_dir: where lm-eval's own results dict of each run goes, as `<label>_<shots>shot.json`.
        desc: the progress bar's title.

    Returns:
        The models, `[{label, path, role, scores}]` (the model first, role "model", then the baselines), and the
        settings they ran with: {device, dtype, seconds}.
    """
    from tqdm.auto import tqdm

    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.dtype, device)
    paths = [cfg.model, *cfg.baselines]
    started = time.time()
    entries = []
    with tqdm(total=len(paths) * len(cfg.shots), desc=desc, unit="run") as bar:
        for path, label in zip(paths, unique_labels(paths)):
            lm = load_lm(path, batch_size=cfg.batch_size, device=device, dtype=dtype,
                         trust_remote_code=cfg.trust_remote_code)
            rows: list[dict] = []
            for k in cfg.shots:
                bar.set_postfix_str(f"{label}, {k}-shot")
                results = run_once(lm, k)
                write_json(raw_dir / f"{label}_{k}shot.json", results)
                rows.extend(scores(results, k))
                bar.update()
            del lm
            gc.collect()
            entries.append({"label": label, "path": str(path), "role": "model" if not entries else "baseline",
                            "scores": rows})
    return entries, {"device": device, "dtype": dtype, "seconds": round(time.time() - started, 1)}


def load_lm(path: str, *, batch_size: int | str, device: str, dtype: str, trust_remote_code: bool = False):
    """lm-eval's HFLM around a model kotune loads (model folder, hub id or LoRA adapter folder)."""
    from lm_eval.models.huggingface import HFLM

    from kotune.models.load import load_model, load_tokenizer

    model = load_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def number(value) -> float | None:
    """A metric or stderr as a float, or None where lm-eval writes "N/A" (no stderr) or nothing."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
