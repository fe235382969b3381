"""Held-out loss of a causal LM on its trained tokens, per example, scored by every process on a shard.

The loss is the one training minimises (cross-entropy on the trained tokens only: replies, not prompts), kept
per example as a summed loss and a token count, so a report can give the token-weighted mean with a bootstrap
interval over examples (`kotune.common.stats.ratio_interval`) and pair before with after on the same examples.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from kotune.common.losses import IGNORE_INDEX, next_token_targets
from kotune.common.stats import ratio_interval
from kotune.data.batching import split_for_rank


def per_example_loss_sums(model, batch: dict, labels: torch.Tensor, select_logits: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over each row's trained tokens, and how many there are (one row per example).

    Where the model supports it only the positions that predict a trained token go through the LM head, as in
    training (`kotune.training.loop`).
    """
    targets = next_token_targets(labels)
    keep = targets != IGNORE_INDEX
    if select_logits:
        logits = model(**batch, use_cache=False, logits_to_keep=keep).logits
        logits = logits.reshape(-1, logits.size(-1))
    else:
        logits = model(**batch, use_cache=False).logits[keep]
    token_loss = F.cross_entropy(logits.float(), targets[keep], reduction="none")
    rows = keep.nonzero()[:, 0]  # row-major, the order both selections above return the positions in
    sums = torch.zeros(labels.size(0), dtype=torch.float32, device=labels.device).index_add_(0, rows, token_loss)
    return sums, keep.sum(dim=1)


def score_share(model, data, rank: int, world: int, micro_batch_size: int, select_logits: bool,
                device=None) -> list[tuple[int, float, int]]:
    """(index, summed loss, trained tokens) of this process's share of `data` (padded batches: one row per example).

    Every process runs the same number of forward passes (an empty share runs a placeholder and keeps nothing),
    so sharded models (FSDP, ZeRO-3) stay in step. Call under `torch.no_grad()` with the model in eval mode.
    """
    indices = list(range(len(data)))
    shares = split_for_rank(indices, [data.length(i) for i in indices], rank, world, micro_batch_size)
    scored: list[tuple[int, float, int]] = []
    for micro in shares:
        batch = {k: v.to(device) for k, v in data.collate(micro or indices[:1]).items()}
        labels = batch.pop("labels")
        sums, counts = per_example_loss_sums(model, batch, labels, select_logits)
        scored += list(zip(micro, sums.tolist(), counts.tolist()))
    return scored


def score_held_out(accelerator, model, data, micro_batch_size: int, select_logits: bool) -> tuple[list[float], list[int]]:
    """Summed loss and trained-token count of every example of `data`, in the order of `data`, on every process:
    each process scores its share, then the shares are gathered."""
    from accelerate.utils import gather_object

    was_training = model.training
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        mine = score_share(model, data, accelerator.process_index, accelerator.num_processes, micro_batch_size,
                           select_logits, accelerator.device)
    model.train(was_training)
    scored = sorted(gather_object(mine) if accelerator.num_processes > 1 else mine)
    return [s for _, s, _ in scored], [c for _, _, c in scored]


def loss_summary(sums: list[float], counts: list[int], seed: int) -> dict:
    """Token-weighted held-out loss with its 95% interval, and the perplexity it implies (exp maps the interval's
    ends exactly: it is monotonic)."""
    loss = ratio_interval(sums, counts, seed)
    return {"loss": loss, "perplexity": {k: math.exp(v) for k, v in loss.items() if k in ("value", "low", "high")},
            "tokens": int(sum(counts))}


def before_after(before: tuple[list[float], list[int]] | None, after: tuple[list[float], list[int]],
                 seed: int) -> dict:
    """Held-out loss before and after training, and the change with a paired 95% interval.

    The change is a ratio over the same examples: sum(after - before) / sum(tokens), resampled per example. It is
    exactly the difference of the two token-weighted losses shown (the tokens are the same), and pairing each
    example with itself removes the spread between easy and hard examples that separate intervals would carry. A
    paired mean of per-example mean losses would weigh a three-token reply like a three-hundred-token one, and
    measure something other than the losses beside it.
    """
    result = {"examples": len(after[0]), "after": loss_summary(*after, seed)}
    if before is None:
        return result
    if before[1] != after[1]:
        raise ValueError("held-out token counts differ before and after training: not the same held-out examples")
    change = ratio_interval([a - b for a, b in zip(after[0], before[0])], after[1], seed)
    change["changed"] = not (change["low"] <= 0.0 <= change["high"])
    return {**result, "before": loss_summary(*before, seed), "change": change}


def save_scores(path: Path, sources: list[str], scores: tuple[list[float], list[int]]) -> None:
    """Per-example scores as JSON Lines (a resumed run reads its step-0 scores back from them)."""
    rows = (json.dumps({"source": s, "loss_sum": loss, "tokens": n}, ensure_ascii=False)
            for s, loss, n in zip(sources, *scores))
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")


def load_scores(path: Path, sources: list[str]) -> tuple[list[float], list[int]] | None:
    """Scores saved by `save_scores` for these same examples, or None (no file, or other examples)."""
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if [r["source"] for r in rows] != sources:
        return None
    return [r["loss_sum"] for r in rows], [r["tokens"] for r in rows]


class HeldOutEvaluator:
    """The `evaluate` callback of `kotune.training.loop.train_loop`: scores `data` and keeps the scores of the
    step-0 model (saved to `before_path`, so a resumed run still compares with them) and of the latest step."""

    def __init__(self, accelerator, data, sources: list[str], micro_batch_size: int, before_path: Path, is_main: bool):
        self.accelerator, self.data, self.sources = accelerator, data, sources
        self.micro_batch_size, self.before_path, self.is_main = micro_batch_size, before_path, is_main
        self.before = load_scores(before_path, sources)
        self.last: tuple[list[float], list[int]] | None = None

    def __call__(self, model, step: int) -> dict:
        from kotune.training.loop import _accepts_logits_to_keep

        select = _accepts_logits_to_keep(self.accelerator.unwrap_model(model))
        self.last = score_held_out(self.accelerator, model, self.data, self.micro_batch_size, select)
        if step == 0:
            self.before = self.last
            if self.is_main:
                save_scores(self.before_path, self.sources, self.before)
        loss = sum(self.last[0]) / sum(self.last[1])
        return {"eval_loss": loss, "eval_perplexity": math.exp(loss), "eval_tokens": sum(self.last[1])}


def _figure(summary: dict) -> str:
    loss = summary["loss"]
    return f"{loss['value']:.4f} [{loss['low']:.4f}, {loss['high']:.4f}] (perplexity {summary['perplexity']['value']:,.2f})"


def held_out_line(result: dict) -> str:
    """One line for the screen and the pipeline report: held-out loss before and after with 95% intervals, and
    whether training changed it measurably."""
    head = f"held-out loss on {result['examples']:,} example(s), {result['after']['tokens']:,} trained tokens: "
    if "before" not in result:
        return head + f"{_figure(result['after'])} after training (no score of the starting model)"
    change = result["change"]
    verdict = (("lowered" if change["value"] < 0 else "raised") + " it measurably" if change["changed"]
               else "changed nothing measurable (the change's interval holds 0)")
    return (head + f"{_figure(result['before'])} before → {_figure(result['after'])} after; change "
            f"{change['value']:+.4f} [{change['low']:+.4f}, {change['high']:+.4f}]: training {verdict}")
