"""From per-candidate measurements to one batch size: the power tuner's selectors, per training sample.

The selectors have the same names and meaning as `callbacks.power.selector`, with a training sample
as the unit (a batch size changes how many samples a step holds, so per-step figures would not
compare):

- `energy`: the lowest J/sample;
- `time`: the lowest s/sample;
- `zeus_cost`: the lowest Zeus cost per sample, `eta * J + (1 - eta) * max_power * s` (Zeus's own
  `zeus.utils.metric.zeus_cost`), `max_power` being the card's maximum power limit (times the world
  size) when known, else the highest average power (J / s) measured over the feasible candidates;
- `max_slowdown`: the lowest J/sample among the candidates whose s/sample is at most
  `max_slowdown` times the fastest candidate's.

A candidate is feasible when it did not run out of memory and its peak memory is within the limit.
Ties go to the configured batch size, then the smaller one. Pure: plain data in and out.

`choose_pair` does the same over (batch size, power limit) pairs, the joint search's measurements:
the fastest pair is `max_slowdown`'s reference, `max_power` is the card's maximum limit (times the
world size), and ties go to the configured size, then the higher (safer) limit, then the smaller size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wattwise.methods.batch_size.measure import CandidateMeasurement
from wattwise.methods.shared.selection import Rule
from wattwise.methods.shared.zeus_adapter import MeasurementRejected, cost_of


@dataclass(frozen=True)
class Choice:
    """The chosen size, each feasible candidate's cost (what the selector minimised) and max_power."""

    batch_size: int
    costs: dict[int, float]
    max_power_W: float | None


def infeasible_reason(m: CandidateMeasurement, memory_limit_bytes: int | None) -> str | None:
    """Why `m` cannot be trained at (None: it can)."""
    if m.oom:
        return "out of memory"
    if m.steps <= 0 or m.samples <= 0:
        return "not measured"
    if memory_limit_bytes is not None and m.peak_memory_bytes is not None:
        if m.peak_memory_bytes > memory_limit_bytes:
            return f"peak memory {m.peak_memory_bytes} B over the limit {memory_limit_bytes} B"
    return None


def feasible(
    measurements: Sequence[CandidateMeasurement], memory_limit_bytes: int | None
) -> list[CandidateMeasurement]:
    return [m for m in measurements if infeasible_reason(m, memory_limit_bytes) is None]


def peak_average_power_W(measurements: Sequence[CandidateMeasurement]) -> float | None:
    """The highest average power (J / s) among `measurements` (None without energy)."""
    powers = [m.energy_J / m.time_s for m in measurements if m.energy_J and m.time_s > 0]
    return max(powers) if powers else None


def choose(
    measurements: Sequence[CandidateMeasurement],
    rule: Rule,
    configured: int,
    memory_limit_bytes: int | None = None,
    max_power_W: float | None = None,
) -> Choice:
    """The batch size `rule.selector` picks among the feasible candidates (see the module doc).

    Raises ValueError with fewer than 2 feasible candidates, MeasurementRejected where a selector that
    needs energy finds a candidate whose window read no energy.
    """
    ok = feasible(measurements, memory_limit_bytes)
    if len(ok) < 2:
        raise ValueError(f"{len(ok)} feasible batch size(s): nothing to choose between")
    if rule.selector != "time":
        empty = [m.batch_size for m in ok if not m.energy_J or m.energy_J <= 0]
        if empty:
            raise MeasurementRejected(
                f"the energy meter read 0 J for batch size(s) {empty}: measure more steps (measure_steps)"
            )
    per_J = {m.batch_size: (m.energy_J or 0.0) / m.samples for m in ok}
    per_s = {m.batch_size: m.time_s / m.samples for m in ok}
    power = None
    if rule.selector == "max_slowdown":
        fastest = min(per_s.values())
        allowed = [b for b in per_s if per_s[b] <= rule.max_slowdown * fastest]
        costs = {b: per_J[b] for b in allowed}
    else:
        if rule.selector == "zeus_cost":
            power = max_power_W if max_power_W is not None else peak_average_power_W(ok)
        costs = {
            b: cost_of(rule.selector, per_J[b], per_s[b], eta=rule.eta, max_power_W=power or 0.0)
            for b in per_J
        }
    best = min(costs, key=lambda b: (costs[b], b != configured, b))
    return Choice(batch_size=best, costs=costs, max_power_W=power)


@dataclass(frozen=True)
class PairChoice:
    """The chosen (batch size, limit), each feasible pair's cost and max_power."""

    batch_size: int
    limit_W: int
    costs: dict[tuple[int, int], float]
    max_power_W: float | None


def choose_pair(
    measurements: Sequence[CandidateMeasurement],
    rule: Rule,
    configured: int,
    memory_limit_bytes: int | None = None,
    max_power_W: float | None = None,
) -> PairChoice:
    """The (batch size, limit) pair `rule.selector` picks per sample among the feasible measurements.

    Raises as `choose` does: under 2 feasible batch sizes, or a window that read no energy.
    """
    ok = [m for m in feasible(measurements, memory_limit_bytes) if m.limit_W is not None]
    if len({m.batch_size for m in ok}) < 2:
        raise ValueError(
            f"{len({m.batch_size for m in ok})} feasible batch size(s): nothing to choose between"
        )
    if rule.selector != "time":
        empty = sorted({(m.batch_size, m.limit_W) for m in ok if not m.energy_J or m.energy_J <= 0})
        if empty:
            raise MeasurementRejected(
                f"the energy meter read 0 J for (batch size, limit W) {empty}: "
                "measure more steps (measure_steps)"
            )
    per_J = {(m.batch_size, int(m.limit_W)): (m.energy_J or 0.0) / m.samples for m in ok if m.limit_W}
    per_s = {(m.batch_size, int(m.limit_W)): m.time_s / m.samples for m in ok if m.limit_W}
    power = None
    if rule.selector == "max_slowdown":
        fastest = min(per_s.values())
        costs = {p: per_J[p] for p in per_s if per_s[p] <= rule.max_slowdown * fastest}
    else:
        if rule.selector == "zeus_cost":
            power = max_power_W if max_power_W is not None else peak_average_power_W(ok)
        costs = {
            p: cost_of(rule.selector, per_J[p], per_s[p], eta=rule.eta, max_power_W=power or 0.0)
            for p in per_J
        }
    best = min(costs, key=lambda p: (costs[p], p[0] != configured, -p[1], p[0]))
    return PairChoice(batch_size=best[0], limit_W=best[1], costs=costs, max_power_W=power)
