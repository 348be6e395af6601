"""What the whole run will cost, predicted from its first epochs: energy, time and carbon.

Pure functions of the measured epochs (the EnergyMonitor's per-epoch figures), so the forecast, the
budget rule and the final error are checked on scripted sequences, without a trainer.

The next epoch is predicted to cost the mean of the last `window` measured epochs, leaving out the
first epoch (it carries warm-up costs) as soon as a second one exists. The run is predicted
to last until `max_epochs`, or fewer where a budget (in joules, or in grams CO2e converted at the
run's intensity and PUE) allows fewer whole epochs: the forecast is for the run the user will get.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_WINDOW = 3


@dataclass(frozen=True)
class EpochCost:
    """One finished epoch: its energy at the devices (training + validation) and its wall time."""

    epoch_J: float
    epoch_s: float


@dataclass(frozen=True)
class RunForecast:
    """The prediction made after `after_epochs` epochs, for `epochs` epochs in all."""

    after_epochs: int
    epochs: int
    total_J: float  # the fit's energy at the devices, set-up included (as energy/total_J)
    time_s: float
    gCO2e: float
    next_epoch_J: float
    next_epoch_s: float
    bound: str  # what limits `epochs`: max_epochs, or the budget that allows fewer

    def figures(self) -> dict[str, Any]:
        return {f"forecast/{k}": v for k, v in asdict(self).items()}


def next_epoch_cost(history: Sequence[EpochCost], window: int = DEFAULT_WINDOW) -> EpochCost:
    """The predicted cost of the next epoch: the mean of the last `window` epochs, the first epoch
    (caches, autotuning, lazy set-up) left out as soon as a second one exists."""
    if not history:
        raise ValueError("a forecast needs at least one measured epoch")
    measured = list(history)[1:] if len(history) > 1 else list(history)  # the first epoch warms up
    recent = measured[-window:]
    return EpochCost(
        sum(c.epoch_J for c in recent) / len(recent), sum(c.epoch_s for c in recent) / len(recent)
    )


def affordable_epochs(done: int, spent_J: float, next_J: float, budget_J: float) -> int:
    """Epochs in all that a budget allows: those done plus the whole predicted epochs that still fit."""
    if next_J <= 0:
        return 1 << 30
    return done + max(0, math.floor((budget_J - spent_J) / next_J + 1e-9))


def forecast_run(
    history: Sequence[EpochCost],
    spent_J: float,
    spent_s: float,
    max_epochs: int,
    gCO2_per_J: float,
    budgets_J: dict[str, float] | None = None,
    window: int = DEFAULT_WINDOW,
) -> RunForecast:
    """Predict the finished run from the epochs so far (see module doc).

    `spent_J`/`spent_s`: the fit's totals so far (set-up included); `gCO2_per_J`: grams CO2e per
    device joule (intensity x PUE / 3.6e6); `budgets_J`: name -> budget in device joules.
    """
    done = len(history)
    nxt = next_epoch_cost(history, window)
    epochs, bound = max(max_epochs, done), "max_epochs"
    for name, budget in (budgets_J or {}).items():
        allowed = affordable_epochs(done, spent_J, nxt.epoch_J, budget)
        if allowed < epochs:
            epochs, bound = allowed, name
    left = epochs - done
    total_J = spent_J + left * nxt.epoch_J
    return RunForecast(
        after_epochs=done,
        epochs=epochs,
        total_J=total_J,
        time_s=spent_s + left * nxt.epoch_s,
        gCO2e=total_J * gCO2_per_J,
        next_epoch_J=nxt.epoch_J,
        next_epoch_s=nxt.epoch_s,
        bound=bound,
    )


def crossing_budget(spent_J: float, next_J: float, budgets_J: dict[str, float]) -> str | None:
    """The first budget the next epoch, at its predicted cost, would cross (None: all hold)."""
    for name, budget in budgets_J.items():
        if spent_J + next_J > budget:
            return name
    return None


def forecast_error_pct(
    forecast: RunForecast, history: Sequence[EpochCost], actual: float, of: str = "energy"
) -> float | None:
    """How far the early forecast was from the real total (`of`: energy or time), in percent of the real one.

    Compared like for like: the forecast is re-read for the epochs actually trained (a run that an
    early-stopping rule cut short is not counted as a forecast error).
    """
    if actual <= 0 or forecast.after_epochs > len(history):
        return None
    total, per_epoch = (
        (forecast.total_J, forecast.next_epoch_J)
        if of == "energy"
        else (forecast.time_s, forecast.next_epoch_s)
    )
    at_forecast = total - (forecast.epochs - forecast.after_epochs) * per_epoch
    predicted = at_forecast + (len(history) - forecast.after_epochs) * per_epoch
    return 100.0 * (predicted - actual) / actual
