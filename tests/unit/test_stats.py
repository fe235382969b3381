"""The report's intervals: seeded (same data, same interval), they cover the truth, and 'changed' means it."""

import numpy as np

from kotune.common.stats import mean_interval, paired_difference_interval, ratio_interval


def test_same_data_same_interval():
    values = np.random.default_rng(1).normal(size=200)
    assert mean_interval(values) == mean_interval(values)


def test_mean_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(2)
    small, large = mean_interval(rng.normal(size=50)), mean_interval(rng.normal(size=5000))
    for r in (small, large):
        assert r["low"] <= r["value"] <= r["high"]
    # the width of a mean's interval falls as 1/sqrt(n): 100x the data, about 1/10 the width (2x slack for sampling)
    assert (large["high"] - large["low"]) < (small["high"] - small["low"]) / 5


def test_ratio_interval_is_the_token_weighted_mean():
    losses, tokens = [2.0, 8.0, 3.0], [1, 4, 1]
    r = ratio_interval(losses, tokens)
    assert r["value"] == 13.0 / 6
    assert r["low"] <= r["value"] <= r["high"]


def test_paired_difference_finds_a_real_change_and_not_noise():
    rng = np.random.default_rng(3)
    before = rng.normal(size=300)
    assert paired_difference_interval(before - 1.0, before)["changed"]  # every example fell by 1
    same = paired_difference_interval(before, before)
    assert not same["changed"] and same["value"] == 0.0


def test_one_example_has_a_point_interval():
    assert mean_interval([0.7]) == {"value": 0.7, "low": 0.7, "high": 0.7, "n": 1}
