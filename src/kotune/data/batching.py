"""Which examples go into which optimizer step, as a pure function of (seed, epoch).

Every process computes the same plan, so the number of trained tokens in a whole global batch is known
everywhere without communication, a resumed run replays exactly the steps it had not done, and a
multi-process run sees the same global batches as a single process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchPlan:
    num_examples: int
    global_batch_size: int
    micro_batch_size: int
    seed: int
    epochs: float
    max_steps: int | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_examples / self.global_batch_size)

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps is not None else max(1, math.ceil(self.epochs * self.steps_per_epoch))

    def epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=g).tolist()

    def step_examples(self, step: int) -> list[int]:
        """Indices of the examples of optimizer step `step` (0-based); the last batch of an epoch may be
        smaller, so no example is dropped."""
        epoch, index = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        return order[index * self.global_batch_size : (index + 1) * self.global_batch_size]

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch


def micro_batches_per_rank(batch_size: int, world_size: int, micro_batch_size: int) -> int:
    """How many micro-batches every process runs for a global batch of `batch_size` examples."""
    return max(1, math.ceil(math.ceil(batch_size / world_size) / micro_batch_size))


def split_for_rank(indices: list[int], lengths: list[int], rank: int, world_size: int,
                   micro_batch_size: int) -> list[list[int]]:
    """This process's micro-batches of one global batch.

    The global batch is sorted by length so that micro-batches pad little, dealt round-robin to processes,
    and cut into micro-batches. Every process gets the same number of micro-batches (an empty list is a
    placeholder a process runs with zero weight, so collective operations stay in step).
    """
    ordered = sorted(indices, key=lambda i: lengths[i])
    mine = ordered[rank::world_size]
    count = micro_batches_per_rank(len(ordered), world_size, micro_batch_size)
    return [mine[k * micro_batch_size : (k + 1) * micro_batch_size] for k in range(count)]
