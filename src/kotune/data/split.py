"""A fixed, seeded held-out split of training records, keyed by what a record says rather than where it sits.

Every process computes the same split from the whole data before anything is sharded, so the held-out set does
not depend on the number of processes; it does not depend on file order or on the line a record starts on
either (a JSON array holds every record on line 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

MIN_KEYS_TO_HOLD_OUT = 10  # below this a held-out set of one or two records says nothing and costs training data


def _rank(key: str, seed: int) -> bytes:
    # A hash, not random.shuffle: the rank of a key does not move when other records are added or removed.
    return hashlib.sha256(f"{seed}\x00{key}".encode("utf-8", "surrogatepass")).digest()


def held_out_split(items: Sequence[T], key: Callable[[T], str], fraction: float,
                   seed: int) -> tuple[list[T], list[T], str | None]:
    """Hold out `fraction` of the distinct keys of `items` (at least one); items sharing a key stay together.

    Returns:
        (train, held_out, why_none): `why_none` says in words why nothing was held out (`fraction` 0, or fewer
        than MIN_KEYS_TO_HOLD_OUT distinct keys), else None.
    """
    if fraction <= 0:
        return list(items), [], "eval_fraction is 0"
    keys = sorted({key(item) for item in items}, key=lambda k: _rank(k, seed))
    if len(keys) < MIN_KEYS_TO_HOLD_OUT:
        return list(items), [], (f"only {len(keys)} distinct prompt(s); at least {MIN_KEYS_TO_HOLD_OUT} are needed to "
                                 "hold some out")
    held = set(keys[:max(1, round(fraction * len(keys)))])
    return [i for i in items if key(i) not in held], [i for i in items if key(i) in held], None
