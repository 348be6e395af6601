"""bench/stats.py on hand-made samples: intervals, paired figures, energy to target, 'not reached'."""

from __future__ import annotations

import math

import pytest
from conftest import load_bench_module

stats = load_bench_module("stats")


def test_a_constant_sample_has_a_degenerate_interval_at_the_constant():
    est = stats.median_ci([3.5] * 7)
    assert (est.value, est.low, est.high, est.n) == (3.5, 3.5, 3.5, 7)


def test_one_value_has_no_interval_and_an_empty_sample_no_value():
    est = stats.median_ci([2.0])
    assert est.value == 2.0 and not est.has_interval
    assert stats.median_ci([]).value is None
    assert stats.median_ci([None, float("nan")]).n == 0  # missing figures are not values


def test_a_symmetric_sample_gives_an_interval_around_its_median_that_shrinks_with_n():
    import numpy as np

    small = stats.median_ci(list(np.linspace(-1.0, 1.0, 11)))  # symmetric about 0, median 0
    large = stats.median_ci(list(np.linspace(-1.0, 1.0, 101)))  # the same spread, 9x the values
    for est in (small, large):
        assert est.value == pytest.approx(0.0, abs=1e-12)
        assert est.low < 0.0 < est.high
        assert -1.0 <= est.low and est.high <= 1.0  # a median's interval stays inside the data
        assert abs(est.low + est.high) <= 0.25 * (est.high - est.low)  # about as far either side
    assert (large.high - large.low) < 0.6 * (small.high - small.low)  # ~1/sqrt(n): 1/3 expected


def test_intervals_are_reproducible():
    sample = [0.91, 0.47, 0.62, 0.55, 0.73, 0.58, 0.66]
    a, b = stats.median_ci(sample), stats.median_ci(sample)
    assert (a.low, a.high) == (b.low, b.high)
    assert a.low < a.value < a.high


def test_ratios_and_deltas_are_paired_by_seed():
    # the machine doubles its speed between seeds; the variant is 0.5x its own seed's baseline each time
    baseline = {0: 10.0, 1: 20.0, 2: 40.0}
    variant = {0: 5.0, 1: 10.0, 2: 20.0, 3: 1.0}  # seed 3 has no baseline: no pair
    assert stats.paired_ratios(variant, baseline) == [0.5, 0.5, 0.5]
    est = stats.ratio_ci(variant, baseline)
    assert (est.value, est.low, est.high, est.n) == (0.5, 0.5, 0.5, 3)
    deltas = stats.paired_deltas({0: 0.90, 1: 0.95}, {0: 0.91, 1: 0.95, 2: 0.9})
    assert deltas == pytest.approx([-1.0, 0.0])  # points
    assert stats.delta_ci({0: 0.90, 1: 0.92}, {0: 0.91, 1: 0.93}).value == pytest.approx(-1.0)


def test_energy_to_target_is_the_cumulative_energy_at_the_first_epoch_that_reaches_it():
    curve = [(2, 0.93, 30.0), (0, 0.70, 10.0), (1, None, 20.0), (3, 0.91, 40.0)]  # any order
    assert stats.energy_to_target(curve, 0.90) == (30.0, 2)
    assert stats.energy_to_target(curve, 0.70) == (10.0, 0)  # reaching it exactly counts
    assert stats.energy_to_target(curve, 0.95) == (None, None)
    assert stats.energy_to_target([], 0.5) == (None, None)


def test_energy_to_target_of_a_loss_is_the_first_epoch_it_falls_to_it():
    curve = [(0, 0.9, 10.0), (1, 0.5, 20.0), (2, 0.3, 30.0), (3, 0.35, 40.0)]
    assert stats.energy_to_target(curve, 0.5, mode="min") == (20.0, 1)  # reaching it exactly counts
    assert stats.energy_to_target(curve, 0.31, mode="min") == (30.0, 2)
    assert stats.energy_to_target(curve, 0.1, mode="min") == (None, None)
    assert stats.energy_to_target(curve, 0.5) == (10.0, 0)  # max: the default, as before
    with pytest.raises(ValueError, match="mode must be min or max"):
        stats.energy_to_target(curve, 0.5, mode="lowest")


def test_a_variant_that_never_reaches_the_target_is_counted_not_dropped_nor_zero():
    baseline = {0: 100.0, 1: 110.0, 2: 90.0, 3: 100.0, 4: 105.0}
    never = {s: None for s in baseline}
    est = stats.ratio_ci(never, baseline, none_is_inf=True)
    assert est.n == 5 and est.not_reached == 5  # every seed is counted
    assert math.isinf(est.value) and math.isinf(est.low) and math.isinf(est.high)
    assert est.fmt() == "inf [inf, inf]"

    sometimes = {0: 50.0, 1: None, 2: 45.0, 3: None, 4: None}  # 3 of 5 seeds never got there
    est = stats.ratio_ci(sometimes, baseline, none_is_inf=True)
    assert est.n == 5 and est.not_reached == 3
    assert math.isinf(est.value)  # most seeds missed: the median says 'not reached'
    assert est.low == pytest.approx(0.5)  # the interval still uses the seeds that got there

    once = {0: 50.0, 1: 55.0, 2: 45.0, 3: 50.0, 4: None}
    est = stats.ratio_ci(once, baseline, none_is_inf=True)
    assert est.value == pytest.approx(0.5) and est.not_reached == 1 and math.isinf(est.high)
    # dropping the miss would give a finite upper end; counting it as zero would pull the median down
    assert stats.ratio_ci(once, baseline).high < math.inf

    # seeds where the baseline itself never got there are no pair, whatever the variant did
    assert stats.paired_ratios({0: 5.0}, {0: None}, none_is_inf=True) == []


def test_pareto_front_keeps_the_points_nothing_beats():
    points = [(10.0, 0.90), (5.0, 0.89), (12.0, 0.88), (5.0, 0.85), (20.0, 0.95)]
    assert stats.pareto_front(points) == [1, 0, 4]  # by energy; (12, .88) and (5, .85) are beaten
