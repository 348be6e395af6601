"""The stopping rules of `+optim=early_stop`, as pure functions of the per-epoch history.

Kept apart from the callback (which only gathers each epoch's metric and energy and acts on the
verdict) so they can be unit-tested and replayed without a trainer: after a resume on the
restored history, and offline on a past run's curves (bench/early_stop_replay.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

REASONS = ("target_reached", "energy_budget", "forecast", "diminishing_returns", "patience")


@dataclass
class EpochRecord:
    """One training epoch as the rules see it.

    metric is None for an epoch without validation (check_val_every_n_epoch > 1);
    epoch_J is that epoch's energy (training + validation), spent_J the fit's total after it.
    """

    epoch: int
    metric: float | None
    epoch_J: float
    spent_J: float


def _signed(history: list[EpochRecord], sign: float) -> list[float | None]:
    """Best-so-far of the metric after each epoch, in a space where larger is better."""
    best: float | None = None
    out: list[float | None] = []
    for rec in history:
        if rec.metric is not None:
            v = sign * rec.metric
            best = v if best is None else max(best, v)
        out.append(best)
    return out


def diminishing_returns_rates(
    history: list[EpochRecord],
    sign: float,
    window: int,
    min_gain_fraction: float | None,
    min_gain_per_kJ: float | None,
) -> list[tuple[float, float] | None]:
    """For each epoch, (gain per kJ over the last `window` epochs, the threshold it must reach), or None.

    gain = best-so-far now - best-so-far `window` epochs ago (never negative), per kJ spent in
    those `window` epochs. The threshold is the larger of `min_gain_per_kJ` and
    `min_gain_fraction` x the run's average gain per kJ since its first validated epoch.
    """
    best = _signed(history, sign)
    first = next((i for i, b in enumerate(best) if b is not None), None)
    out: list[tuple[float, float] | None] = []
    for i, rec in enumerate(history):
        if first is None or rec.metric is None or i - window < first:
            out.append(None)
            continue
        gain = best[i] - best[i - window]  # type: ignore[operator]
        kJ = sum(r.epoch_J for r in history[i - window + 1 : i + 1]) / 1000.0
        rate = gain / kJ if kJ > 0 else (math.inf if gain > 0 else 0.0)
        threshold = 0.0
        if min_gain_per_kJ is not None:
            threshold = max(threshold, min_gain_per_kJ)
        if min_gain_fraction is not None:
            spent_kJ = sum(r.epoch_J for r in history[first + 1 : i + 1]) / 1000.0
            average = (best[i] - best[first]) / spent_kJ if spent_kJ > 0 else 0.0  # type: ignore[operator]
            threshold = max(threshold, min_gain_fraction * average)
        out.append((rate, threshold))
    return out


def diminishing_returns_fired(
    history: list[EpochRecord],
    sign: float,
    window: int,
    min_gain_fraction: float | None,
    min_gain_per_kJ: float | None,
    diminishing_patience: int,
) -> bool:
    """True when the last `diminishing_patience` validated epochs all fell below the threshold.

    An epoch with no gain at all over its window always counts as below.
    """
    if min_gain_fraction is None and min_gain_per_kJ is None:
        return False
    below = 0
    for entry in diminishing_returns_rates(history, sign, window, min_gain_fraction, min_gain_per_kJ):
        if entry is None:
            continue
        rate, threshold = entry
        below = below + 1 if (rate <= 0 or rate < threshold) else 0
    return bool(history) and history[-1].metric is not None and below >= diminishing_patience


def patience_fired(history: list[EpochRecord], sign: float, patience: int | None, min_delta: float) -> bool:
    """The ordinary rule: `patience` validations in a row without improving by more than `min_delta`."""
    if patience is None:
        return False
    best: float | None = None
    wait = 0
    for rec in history:
        if rec.metric is None:
            continue
        v = sign * rec.metric
        if best is None or v - best > min_delta:
            best, wait = v, 0
        else:
            wait += 1
    return wait >= patience


def target_fired(history: list[EpochRecord], sign: float, target: float | None) -> bool:
    if target is None or not history or history[-1].metric is None:
        return False
    return sign * history[-1].metric >= sign * target


def next_epoch_J(history: list[EpochRecord], window: int) -> float | None:
    """The predicted cost of the next epoch: the largest of the last `window` measured epochs."""
    recent = [r.epoch_J for r in history[-window:]]
    return max(recent) if recent else None


def budget_fired(history: list[EpochRecord], spent_J: float, budget_J: float | None, window: int) -> bool:
    """True when the next epoch, at the cost of the recent ones, would take the fit past the budget."""
    if budget_J is None:
        return False
    if spent_J >= budget_J:
        return True
    predicted = next_epoch_J(history, window)
    return predicted is not None and spent_J + predicted > budget_J


class RuleSettings(Protocol):
    """What the rules read from the settings (EarlyStopSettings has these fields)."""

    mode: str
    window: int
    min_gain_fraction: float | None
    min_gain_per_kJ: float | None
    diminishing_patience: int
    target: float | None
    patience: int | None
    min_delta: float


def fired_rules(
    history: list[EpochRecord], since: int, spent_J: float, budget_J: float | None, s: RuleSettings
) -> list[str]:
    """The rules that fire after the last epoch of `history`, in `REASONS` order (empty: go on).

    The metric rules judge only the epochs from `since` on (the net as it is since its last
    structure change); the budget covers the whole fit, the next epoch predicted from the
    current net's epochs when there are any.
    """
    h, sign = history[since:], (1.0 if s.mode == "max" else -1.0)
    checks = {
        "target_reached": target_fired(h, sign, s.target),
        "energy_budget": budget_fired(h or history, spent_J, budget_J, s.window),
        "diminishing_returns": diminishing_returns_fired(
            h, sign, s.window, s.min_gain_fraction, s.min_gain_per_kJ, s.diminishing_patience
        ),
        "patience": patience_fired(h, sign, s.patience, s.min_delta),
    }
    return [name for name in REASONS if checks.get(name)]  # `forecast`: the callback asks forecast.py


def epoch_energy_J(energies: Sequence[float], known: int, spent_J: float, epoch_start_J: float) -> float:
    """This epoch's energy: the monitor's (DDP-summed) figure if it closed a new epoch since the
    `known` ones, else what the fit's total grew by since the epoch started."""
    if len(energies) > known:
        return float(energies[-1])
    return float(spent_J - epoch_start_J)
