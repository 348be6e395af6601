"""The learning-curve forecast of `early_stop` and its `forecast` rule.

The fit is checked on synthetic curves whose limit is known, the rule on scripted histories (a
saturated curve stops, a steep one does not, a price per point, a loss with mode=min), and a
real (fake-GPU) run resumed from a mid-run checkpoint against an uninterrupted one.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from test_early_stop import _run

from wattwise.methods.early_stop.callback import EarlyStop, EpochRecord
from wattwise.methods.early_stop.forecast import forecast_curve, forecast_fired

T = np.arange(1, 61, dtype=float)


def _pow(t: np.ndarray) -> np.ndarray:
    return 0.95 - 0.5 * t**-0.8


def _exp(t: np.ndarray) -> np.ndarray:
    return 0.90 - 0.6 * np.exp(-t / 6.0)


@pytest.mark.parametrize("curve", [_pow, _exp])
def test_the_fit_finds_a_known_limit_and_its_interval_covers_it(curve):
    covered, seeds = 0, range(10)
    for seed in seeds:
        noisy = curve(T) + np.random.default_rng(seed).normal(0, 0.004, len(T))
        fc = forecast_curve(noisy[:30], horizon=60, confidence=0.9)
        truth = float(curve(np.array([60.0]))[0])
        assert fc.final == pytest.approx(truth, abs=0.01), seed  # within one point
        covered += fc.final_low <= truth <= fc.final_high
    assert covered >= 8  # a 90% interval; most seeds


def test_a_loss_to_minimise_is_forecast_downwards():
    loss = 0.2 + 1.5 * T**-1.0 + np.random.default_rng(0).normal(0, 0.005, len(T))
    fc = forecast_curve(loss[:20], horizon=60, sign=-1.0)
    assert fc.final == pytest.approx(0.2 + 1.5 / 60, abs=0.02)
    assert fc.final < fc.now and fc.gain > 0  # lower is better: the gain is still positive
    assert fc.final_low <= fc.final <= fc.final_high


def test_the_fit_takes_milliseconds():
    noisy = _pow(T) + np.random.default_rng(1).normal(0, 0.004, len(T))
    forecast_curve(noisy[:40], 60)
    start = time.perf_counter()
    for k in range(10, 60, 5):
        forecast_curve(noisy[:k], 60)
    assert (time.perf_counter() - start) / 10 < 0.05  # a few ms on one core; 50 ms with headroom


def _replay(es: EarlyStop, metrics, epoch_J: float = 4.0, max_epochs: int = 60) -> tuple[int | None, list]:
    """Feed a scripted history epoch by epoch; (epochs trained when a rule fired, reasons) or (None, [])."""
    es.max_epochs = max_epochs
    for i, m in enumerate(metrics):
        es.history.append(EpochRecord(i, float(m), epoch_J, 1.0 + epoch_J * (i + 1)))
        fired = es._evaluate(1.0 + epoch_J * (i + 1))
        if fired:
            return i + 1, fired
    return None, []


def test_a_saturated_curve_stops_and_a_steep_one_does_not():
    noise = np.random.default_rng(3).normal(0, 0.002, len(T))
    flat = 0.90 - 0.5 * T**-2.0 + noise  # epochs 10 to 60 still gain 0.49 points: stop soon after 10
    stopped, reasons = _replay(EarlyStop(tolerance=0.5, min_gain_fraction=None), flat[:30])
    assert reasons == ["forecast"] and 8 <= stopped <= 16
    # An exponential saturates faster than a power law; the bound covers both families, so the rule
    # waits until the power law's tail is small too (conservative by design).
    fast = 0.90 - 0.5 * np.exp(-T / 2.0) + noise
    stopped, reasons = _replay(EarlyStop(tolerance=0.5, min_gain_fraction=None), fast[:40])
    assert reasons == ["forecast"] and stopped <= 30
    steep = 0.2 + 0.012 * T + noise  # still climbing 1.2 points an epoch
    assert _replay(EarlyStop(tolerance=0.5, min_gain_fraction=None), steep[:30]) == (None, [])


def test_the_forecast_rule_is_off_by_default_and_off_without_a_horizon():
    flat = np.full(20, 0.9)
    assert _replay(EarlyStop(min_gain_fraction=None), flat) == (None, [])
    es = EarlyStop(tolerance=0.5, min_gain_fraction=None)
    assert _replay(es, flat, max_epochs=None) == (None, []) and es.forecast is None


def test_max_J_per_point_prices_the_remaining_gain():
    # Still gaining about 3 points by epoch 60 when judged at 20, at 4 J an epoch: ~160 J for ~3 points.
    curve = 0.95 - 0.6 * T**-0.7 + np.random.default_rng(4).normal(0, 0.001, len(T))
    cheap, _ = _replay(EarlyStop(max_J_per_point=1e6, min_gain_fraction=None), curve[:20])
    assert cheap is None  # a point is worth a megajoule to this user: go on
    dear, reasons = _replay(EarlyStop(max_J_per_point=1.0, min_gain_fraction=None), curve[:20])
    assert reasons == ["forecast"] and dear == 8  # 1 J per point: not worth it, at the first forecast


def test_price_uses_the_forecast_energy_and_the_gain_bound():
    es = EarlyStop(max_J_per_point=10.0, min_gain_fraction=None)
    es.max_epochs = 60
    es.history = [EpochRecord(i, 0.9 - 0.3 / (i + 1), 4.0, 1.0 + 4.0 * (i + 1)) for i in range(8)]
    es._evaluate(33.0)
    fc = es.forecast
    assert fc.remaining_J == pytest.approx(4.0 * (60 - 8))  # the energy forecast's epoch cost x epochs left
    points = fc.gain_high / 0.01
    assert forecast_fired(fc, None, 0.01, fc.remaining_J / points * 1.01) is False
    assert forecast_fired(fc, None, 0.01, fc.remaining_J / points * 0.99) is True


def test_mode_min_on_a_loss_curve():
    loss = 0.25 + 1.2 * T**-1.5 + np.random.default_rng(5).normal(0, 0.003, len(T))
    stopped, reasons = _replay(
        EarlyStop(monitor="val/loss", mode="min", tolerance=0.5, min_gain_fraction=None), loss[:50]
    )
    assert reasons == ["forecast"] and 20 <= stopped <= 40  # 0.005 left to gain from about epoch 30
    falling = 2.0 - 0.03 * T  # a loss still falling 0.03 an epoch
    es = EarlyStop(monitor="val/loss", mode="min", tolerance=0.5, min_gain_fraction=None)
    assert _replay(es, falling[:30]) == (None, [])
    assert es.forecast.final < falling[29]  # predicted lower still


def test_a_structure_change_restarts_the_forecast():
    es = EarlyStop(tolerance=0.5, min_gain_fraction=None)
    flat = [0.9] * 10
    es.max_epochs = 60
    es.history = [EpochRecord(i, m, 4.0, 4.0 * (i + 1)) for i, m in enumerate(flat)]
    es.on_structure_change(None, None, None)
    es.history += [EpochRecord(10 + i, 0.5 + 0.05 * i, 4.0, 44.0 + 4 * i) for i in range(3)]
    assert es._evaluate(52.0) == [] and es.forecast is None  # 3 epochs of the new net: too few to judge
    es.history += [EpochRecord(13 + i, 0.65 + 0.03 * i, 4.0, 56.0 + 4 * i) for i in range(6)]
    assert es._evaluate(76.0) == []  # the pruned net still climbs 3 points an epoch
    assert es.forecast.after == 19 and es.forecast.gain > 0.05  # fitted on the 9 epochs since the prune


VALUES = "0.502 0.8355 0.9 0.9239 0.93 0.9395 0.9408 0.941 0.9464 0.9435 0.9463 0.9489".split()
FORECAST = [
    "callbacks.early_stop.tolerance=0.5",
    "callbacks.early_stop.min_gain_fraction=null",
    "callbacks.early_stop.min_epochs=5",
]
KEYS = ("stop/predicted_final", "stop/predicted_final_low", "stop/predicted_final_high")


@pytest.mark.slow
def test_resumed_run_reaches_the_same_forecast_and_decision(make_cfg, tmp_path):
    """A run stopped by the forecast, and the same run interrupted after 6 epochs and resumed."""
    whole = _run(make_cfg, "trainer.max_epochs=12", *FORECAST, values=VALUES)
    assert whole["stop/reason"] == "forecast" and 6 < whole["stop/epoch"] < 12
    for key in (*KEYS, "stop/predicted_gain", "stop/remaining_J", "stop/forecast_after"):
        assert whole[key] is not None, key
    assert (
        whole["stop/predicted_final_low"]
        <= whole["stop/predicted_final"]
        <= whole["stop/predicted_final_high"]
    )
    assert whole["stop/predicted_gain"] < 0.005 and whole["stop/remaining_J"] > 0
    assert "stop/forecast_error" not in whole  # it stopped: nothing to compare with

    ckpt = tmp_path / "first.ckpt"
    _run(make_cfg, "trainer.max_epochs=6", *FORECAST, values=VALUES)
    shutil.copy(tmp_path / "run" / "checkpoints" / "last.ckpt", ckpt)
    resumed = _run(
        make_cfg, "trainer.max_epochs=12", *FORECAST, f"ckpt_path={ckpt}", "test=false", values=VALUES
    )
    for key in ("stop/reason", "stop/epoch", "stop/forecast_after", "stop/remaining_J", *KEYS):
        assert resumed[key] == pytest.approx(whole[key]), key


@pytest.mark.slow
def test_a_run_that_went_on_reports_the_halfway_forecast_error(make_cfg):
    # forecast rule off (tolerance null): no stop; the forecast is still made, from epoch 5 on
    s = _run(make_cfg, "trainer.max_epochs=10", "callbacks.early_stop.min_epochs=5", values=VALUES[:10])
    assert s["stop/reason"] == "max_epochs"
    assert s["stop/forecast_after"] == 5
    assert s["stop/forecast_error"] == pytest.approx(s["stop/predicted_final"] - float(VALUES[9]), rel=1e-5)
    assert isinstance(s["stop/forecast_in_interval"], bool)
