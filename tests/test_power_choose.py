"""Choosing from measured windows (`methods/power/choose.py`): Zeus's pick, confirming, the safer one."""

from __future__ import annotations

import random

import pytest
from zeus.optimizer.power_limit import Energy, MaxSlowdownConstraint, PowerLimitMeasurement, Time, ZeusCost

from wattwise.methods.power.choose import Rule, decide, summarize
from wattwise.methods.power.profiler import Sample


def _windows(limit: int, energies: list[float], times: list[float], steps: int = 10) -> list[Sample]:
    """Windows of `steps` batches each, with these per-batch joules and seconds."""
    return [Sample(limit, 1, steps, e * steps, t * steps) for e, t in zip(energies, times, strict=True)]


def test_two_limits_within_the_noise_are_confirmed_and_the_higher_one_wins():
    # 150 W is 1 % cheaper on average, but its windows scatter by ~4 %: the noise cannot tell them apart
    samples = _windows(200, [100, 104, 96, 100], [1.0] * 4) + _windows(150, [95, 103, 99, 99], [1.1] * 4)
    assert decide(samples, final=False, rule=Rule("energy"), confirm=True).confirm_W == (200, 150)
    final = decide(samples, final=True, rule=Rule("energy"), confirm=True)
    assert final.chosen_W == 200  # the safer (higher) limit: the saving was not measurable


def test_a_clear_saving_is_taken_without_confirmation():
    samples = _windows(200, [100, 101, 99, 100], [1.0] * 4) + _windows(150, [90, 91, 89, 90], [1.1] * 4)
    decision = decide(samples, final=False, rule=Rule("energy"), confirm=True)
    assert decision.confirm_W == () and decision.chosen_W == 150
    assert summarize(samples)[150].as_record()["energy_rsd"] == pytest.approx(0.0091, abs=1e-3)


def test_max_slowdown_takes_the_lowest_limit_that_is_surely_within_the_factor():
    top = _windows(300, [100] * 4, [1.0, 1.02, 0.98, 1.0])
    edge = _windows(200, [80] * 4, [1.08, 1.12, 1.10, 1.10])  # mean 1.10: exactly at the 1.1 factor
    clear = _windows(250, [90] * 4, [1.03, 1.05, 1.04, 1.04])
    rule = Rule("max_slowdown", max_slowdown=1.1)
    samples = top + clear + edge
    # the edge case and the lowest limit surely within the factor are measured again
    assert decide(samples, final=False, rule=rule, confirm=True).confirm_W == (250, 200)
    assert decide(samples, final=True, rule=rule, confirm=True).chosen_W == 250  # Zeus alone: 200 W


@pytest.mark.parametrize("seed", range(5))
def test_without_noise_the_choice_is_exactly_zeus_selectors_choice(seed):
    rng = random.Random(seed)
    limits = [300, 275, 250, 225, 200, 175, 150]
    figures = {lim: (rng.uniform(50, 150), rng.uniform(0.5, 2.0)) for lim in limits}
    samples = [s for lim, (e, t) in figures.items() for s in _windows(lim, [e] * 3, [t] * 3)]
    measured = [PowerLimitMeasurement(power_limit=lim, energy=e, time=t) for lim, (e, t) in figures.items()]
    for rule, zeus in [
        (Rule("energy"), Energy()),
        (Rule("time"), Time()),
        (Rule("zeus_cost", eta=0.5), ZeusCost(eta_knob=0.5)),
        (Rule("max_slowdown", max_slowdown=1.5), MaxSlowdownConstraint(factor=1.5)),
    ]:
        decision = decide(samples, final=False, rule=rule, confirm=True)
        assert decision.confirm_W == () and decision.chosen_W == zeus.select(measured), rule
