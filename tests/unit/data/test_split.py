"""The held-out split: a fixed, seeded choice of distinct keys, the same on rerun, in any order and in any process."""

import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from kotune_test_paths import REPO
from kotune.data.split import MIN_KEYS_TO_HOLD_OUT, held_out_split

records = st.lists(st.tuples(st.text(max_size=6), st.integers()), min_size=MIN_KEYS_TO_HOLD_OUT, max_size=60)


def first(item):
    return item[0]


@settings(max_examples=40, deadline=None)
@given(records, st.floats(0.01, 0.9), st.integers(0, 2**31), st.randoms(use_true_random=False))
def test_split_is_a_seeded_partition_by_key_whatever_the_order(items, fraction, seed, rng):
    keys = {first(i) for i in items}
    train, held, why_none = held_out_split(items, first, fraction, seed)
    if len(keys) < MIN_KEYS_TO_HOLD_OUT:
        assert (train, held) == (items, []) and f"only {len(keys)} distinct prompt(s)" in why_none
        return
    assert why_none is None and sorted(train + held) == sorted(items)  # nothing lost, nothing repeated
    held_keys = {first(i) for i in held}
    assert not held_keys & {first(i) for i in train}  # one key, one side: no duplicate on both
    assert len(held_keys) == max(1, round(fraction * len(keys)))
    shuffled = list(items)
    rng.shuffle(shuffled)  # another file order: the same records held out
    assert {first(i) for i in held_out_split(shuffled, first, fraction, seed)[1]} == held_keys


def test_seed_chooses_and_nothing_is_held_out_from_too_little_data_or_fraction_zero():
    items = [f"prompt {i}" for i in range(200)]
    held = [held_out_split(items, str, 0.1, seed)[1] for seed in (1, 1, 2)]
    assert held[0] == held[1] and held[0] != held[2]
    assert held_out_split(items, str, 0.0, 1)[1:] == ([], "eval_fraction is 0")
    train, none, why = held_out_split(items[:MIN_KEYS_TO_HOLD_OUT - 1], str, 0.5, 1)
    assert none == [] and len(train) == MIN_KEYS_TO_HOLD_OUT - 1
    assert why == f"only {MIN_KEYS_TO_HOLD_OUT - 1} distinct prompt(s); at least {MIN_KEYS_TO_HOLD_OUT} are needed to hold some out"


def test_split_is_the_same_in_another_process():
    """Another process (another rank, a rerun) with another string-hash salt holds out the same records."""
    code = ("from kotune.data.split import held_out_split; "
            "print(held_out_split([f'p{i}' for i in range(100)], str, 0.1, 7)[1])")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                           env={**os.environ, "PYTHONHASHSEED": salt}).stdout for salt in ("1", "2")]
    assert runs[0] == runs[1] == str(held_out_split([f"p{i}" for i in range(100)], str, 0.1, 7)[1]) + "\n"
