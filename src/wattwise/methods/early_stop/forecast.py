"""Learning-curve forecast for `early_stop`'s `forecast` rule: what would the remaining epochs still buy?

The monitored metric's curve so far is fitted with two saturating families (Domhan et al. 2015 use a
larger ensemble of the same kind), in a space where larger is better (the metric times +1 for
`max`, -1 for `min`):

    pow:  y(t) = a - b * t^-c          exp:  y(t) = a - b * exp(-c * t / n)      (b >= 0, c > 0)

t counts epochs from 1 (from the last structure change: a prune restarts the curve); n is the last
t so far (so one grid of c fits every length). For a fixed c both families are linear in (a, b),
so each fit is a closed-form least squares on a grid of c values, all grid points and all
bootstrap replicates at once in numpy: a forecast takes a few milliseconds. The family with the
smaller residual sum of squares gives the point forecast; the bounds are the ensemble's, the
widest of the two families'.

The interval is a residual bootstrap (seeded by the number of points, so a resumed run forecasts
exactly as an uninterrupted one): each family's fit plus its resampled residuals, refitted
`BOOTSTRAP` times. The gain of the remaining epochs (curve at the horizon minus curve now) is
read within each replicate, so its bound is tighter than the difference of two bounds; the
interval of the final value also adds a resampled residual (what one more validation would
show), so it can be checked against the value that was then observed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from wattwise.energy.forecast import EpochCost, affordable_epochs, next_epoch_cost
from wattwise.methods.early_stop.rules import EpochRecord

BOOTSTRAP = 40  # refits for the interval
C_GRID = np.geomspace(0.05, 12.0, 48)  # exponents (pow) and rates (exp) tried
FAMILIES = ("pow", "exp")


@dataclass(frozen=True)
class CurveForecast:
    """One forecast, in the metric's own units and direction (a loss stays a loss)."""

    after: int  # epochs trained when it was made
    horizon: int  # the epoch count it predicts the metric at
    family: str
    now: float  # the fitted curve at the last point
    final: float  # the fitted curve at the horizon
    final_low: float  # prediction interval of the value observed at the horizon
    final_high: float
    gain: float  # final - now, in the better-is-larger sense (>= 0 on a saturating fit)
    gain_high: float  # upper bound of the gain at the stated confidence
    remaining_J: float | None  # energy of the epochs left until the horizon


def _basis(family: str, t: np.ndarray, n: float) -> np.ndarray:
    """(len(C_GRID), len(t)): the family's shape term for every c of the grid."""
    c = C_GRID[:, None]
    if family == "pow":
        return -np.power(t[None, :], -c)
    return -np.exp(-c * t[None, :] / n)


def _fit(
    family: str, t: np.ndarray, y: np.ndarray, n: float, cap: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of y (..., T) on a + b * basis for every c: (sse, a, b), shapes (..., C).

    b is held at >= 0 (a curve that only gets better; where the free fit wants b < 0 the best
    saturating curve is the constant mean), and the limit a at <= cap where one is known.
    """
    f = _basis(family, t, n)  # (C, T)
    fm = f.mean(axis=1)  # (C,)
    fc = f - fm[:, None]
    sff = (fc * fc).sum(axis=1)  # (C,)
    ym = y.mean(axis=-1, keepdims=True)  # (..., 1)
    yc = y - ym
    sfy = np.einsum("...t,ct->...c", yc, fc)  # (..., C)
    b = np.clip(sfy / np.where(sff > 0, sff, 1.0), 0.0, None)
    a = ym - b * fm  # (..., C)
    syy = (yc * yc).sum(axis=-1, keepdims=True)
    sse = syy - 2 * b * sfy + b * b * sff
    if cap is not None:  # where a > cap: a = cap, b by least squares of y - cap on f
        d = y - cap
        sdf = np.einsum("...t,ct->...c", d, f)
        sdd = (d * d).sum(axis=-1, keepdims=True)
        sf2 = (f * f).sum(axis=1)
        bc = np.clip(sdf / np.where(sf2 > 0, sf2, 1.0), 0.0, None)
        over = a > cap
        a = np.where(over, cap, a)
        b = np.where(over, bc, b)
        sse = np.where(over, sdd - 2 * bc * sdf + bc * bc * sf2, sse)
    return sse, a, b


def _predict(family: str, a: Any, b: Any, ci: Any, t: Any, n: float) -> np.ndarray:
    """The family's curve with the fitted (a, b, c index) at t (arrays broadcast)."""
    c = C_GRID[ci]
    shape = -np.power(t, -c) if family == "pow" else -np.exp(-c * t / n)
    return a + b * shape


def _best(family: str, t: np.ndarray, y: np.ndarray, n: float, cap: float | None) -> tuple[np.ndarray, ...]:
    """The best c per row of y: (sse, a, b, index of c)."""
    sse, a, b = _fit(family, t, y, n, cap)
    ci = np.argmin(sse, axis=-1)
    take = np.take_along_axis
    pick = ci[..., None]
    return take(sse, pick, -1)[..., 0], take(a, pick, -1)[..., 0], take(b, pick, -1)[..., 0], ci


def _start(y: np.ndarray, skip: int) -> int:
    """The first point fitted: after `skip`, and after the steepest rise of the first half (a curve
    that starts slowly, like a GRU's, is S-shaped: only its tail is saturating); 4 points at least."""
    n = len(y)
    steep = int(np.argmax(np.diff(y[: max(2, n // 2)]))) + 1 if n >= 4 else 0
    return max(0, min(max(skip, steep), n - 4))


def _cap(raw: np.ndarray, sign: float) -> float | None:
    """A known limit, in the larger-is-better space: a maximised metric that stayed within [0, 1] is
    a fraction (at most 1); a minimised one that stayed >= 0 is a loss (at least 0)."""
    if sign > 0 and raw.min() >= 0 and raw.max() <= 1:
        return 1.0
    if sign < 0 and raw.min() >= 0:
        return 0.0
    return None


def forecast_curve(
    values: Sequence[float],
    horizon: int,
    sign: float = 1.0,
    confidence: float = 0.9,
    per_epoch_J: float | None = None,
    epochs: Sequence[int] | None = None,
    skip: int = 1,
) -> CurveForecast:
    """Forecast the metric at epoch `horizon` (counted from 1) from `values` so far.

    `epochs`: the epoch (from 1) of each value (default 1, 2, ...: every epoch validated).
    `sign`: +1 for a metric to maximise, -1 for one to minimise. The first `skip` points (the
    first epoch's jump is no part of the saturating tail) are left out while 4 remain.
    `per_epoch_J`: the predicted cost of one more epoch, for `remaining_J`.
    """
    raw = np.asarray(values, dtype=float)
    n_all = len(raw)
    if n_all < 3:
        raise ValueError("a learning-curve forecast needs at least 3 validated epochs")
    t_all = np.arange(1, n_all + 1, dtype=float) if epochs is None else np.asarray(epochs, dtype=float)
    start, cap = _start(raw * sign, skip), _cap(raw, sign)
    t, y, n = t_all[start:], sign * raw[start:], float(t_all[-1])
    h = float(max(horizon, n))
    rng = np.random.default_rng(n_all)  # seeded by the length: a resumed run forecasts the same
    runs = {fam: _bootstrap(fam, t, y, n, h, cap, rng) for fam in FAMILIES}
    family = min(runs, key=lambda fam: runs[fam][0])  # the better fit gives the point forecast
    _, final, now, _, _ = runs[family]
    # The ensemble's bounds are those of both families: on the recorded curves the family that fits a
    # little worse is often the right shape further on (a power law's long tail), and bounds from the
    # best fit alone stopped the 1D CNN too early (bench/RESULTS.md, early stopping).
    near = list(runs.values())
    tail = (1.0 - confidence) / 2
    lows, highs = zip(*(sorted(sign * q for q in np.quantile(r[4], [tail, 1 - tail])) for r in near))
    return CurveForecast(
        after=n_all,
        horizon=int(h),
        family=family,
        now=sign * now,
        final=sign * final,
        final_low=float(min(lows)),
        final_high=float(max(highs)),
        gain=final - now,
        gain_high=float(max(np.quantile(r[3], confidence) for r in near)),
        remaining_J=None if per_epoch_J is None else (h - n) * per_epoch_J,
    )


def _bootstrap(
    family: str, t: np.ndarray, y: np.ndarray, n: float, h: float, cap: float | None, rng: np.random.Generator
) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """One family's fit and residual bootstrap: (sse, final, now, gains of the replicates, values
    observed at the horizon in the replicates), in the larger-is-better space."""
    sse, a, b, ci = _best(family, t, y, n, cap)
    fitted = _predict(family, a, b, ci, t, n)
    resid = (y - fitted) * np.sqrt(len(y) / max(1, len(y) - 3))  # 3 parameters fitted: unbias the spread
    boot = fitted[None, :] + rng.choice(resid, size=(BOOTSTRAP, len(y)), replace=True)
    _, ba, bb, bci = _best(family, t, boot, n, cap)
    b_final = _predict(family, ba, bb, bci, h, n)
    b_gain = b_final - _predict(family, ba, bb, bci, n, n)
    b_obs = b_final + rng.choice(resid, size=BOOTSTRAP, replace=True)
    if cap is not None:
        b_obs = np.minimum(b_obs, cap)
    final, now = float(_predict(family, a, b, ci, h, n)), float(_predict(family, a, b, ci, n, n))
    return float(sse), final, now, b_gain, b_obs


def forecast_fired(
    fc: CurveForecast, tolerance: float | None, point: float, max_J_per_point: float | None
) -> bool:
    """The `forecast` rule: the remaining epochs' gain is below `tolerance` points even at its upper
    bound, or each point it may still buy costs more than `max_J_per_point` (judged on that bound)."""
    if tolerance is not None and fc.gain_high < tolerance * point:
        return True
    if max_J_per_point is None or fc.remaining_J is None:
        return False
    points = fc.gain_high / point
    return points <= 0 or fc.remaining_J / points > max_J_per_point


def forecast_history(
    history: Sequence[EpochRecord],
    since: int,
    sign: float,
    max_epochs: int | None,
    spent_J: float,
    budget_J: float | None,
    s: ForecastSettings,
    measured: bool = True,
) -> CurveForecast | None:
    """The forecast after the last epoch of `history` (None: too few validated epochs, or no horizon).

    Only the epochs from `since` are fitted (the net as it is since its last structure change: a
    prune restarts the curve). The horizon is `max_epochs`, or the last epoch an energy budget still
    pays for at the predicted cost per epoch (the run's energy forecast, energy/forecast.py).
    """
    h = list(history[since:])
    pts = [(r.epoch, float(r.metric)) for r in h if r.metric is not None and math.isfinite(r.metric)]
    if max_epochs is None or max_epochs <= 0 or len(pts) < max(3, s.min_epochs):
        return None
    per_J = next_epoch_cost([EpochCost(r.epoch_J, 0.0) for r in h]).epoch_J if measured else None
    done = history[-1].epoch + 1
    horizon = max_epochs
    if budget_J is not None and per_J:
        horizon = min(horizon, affordable_epochs(done, spent_J, per_J, budget_J))
    first = h[0].epoch
    fc = forecast_curve(
        [m for _, m in pts],
        horizon - first,
        sign,
        s.confidence,
        per_J,
        epochs=[e - first + 1 for e, _ in pts],
    )
    return replace(fc, after=done, horizon=horizon)  # in the run's epochs, not the fit's


def halfway_forecast(
    history: Sequence[EpochRecord],
    since: int,
    sign: float,
    max_epochs: int | None,
    s: ForecastSettings,
    measured: bool = True,
) -> CurveForecast | None:
    """The forecast made after half of `max_epochs`, from a run's full history (None: none was made,
    or the net changed after it: it forecast another net)."""
    if not max_epochs or not history:
        return None
    half = [r for r in history if r.epoch + 1 <= math.ceil(max_epochs / 2)]
    if len(half) <= since:
        return None
    return forecast_history(half, since, sign, max_epochs, half[-1].spent_J, None, s, measured)


def forecast_figures(fc: CurveForecast, actual: float | None) -> dict[str, Any]:
    """The summary's figures of one forecast; with the value then observed at its horizon (`actual`),
    how far it was (`stop/forecast_error`, predicted - observed) and whether its interval held it."""
    out: dict[str, Any] = {
        "stop/forecast_after": fc.after,
        "stop/predicted_final": fc.final,
        "stop/predicted_final_low": fc.final_low,
        "stop/predicted_final_high": fc.final_high,
        "stop/predicted_gain": fc.gain,  # an improvement: a loss that falls gains
        "stop/remaining_J": fc.remaining_J,
    }
    if actual is not None:
        out["stop/forecast_error"] = fc.final - float(actual)
        out["stop/forecast_in_interval"] = bool(fc.final_low <= actual <= fc.final_high)
    return out


class ForecastSettings(Protocol):
    """What the forecast reads from the settings (EarlyStopSettings has these fields)."""

    confidence: float
    min_epochs: int


def describe(fc: CurveForecast, monitor: str) -> str:
    """One line for the log: what was forecast when the rule stopped the fit."""
    spend = f" for about {fc.remaining_J:.4g} J" if fc.remaining_J is not None else ""
    return (
        f"{monitor} {fc.final:.4g} at epoch {fc.horizon} (interval {fc.final_low:.4g} to "
        f"{fc.final_high:.4g}), {fc.gain:+.3g} over {fc.horizon - fc.after} more epochs{spend}"
    )
