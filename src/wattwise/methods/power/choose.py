"""From measured samples to a limit: Zeus's selector on the means, then the noise checks around it.

Each limit's figures are per training batch (so blocks cut short by a pause weigh in fairly):
energy and time are the totals over its samples divided by its batches. Each sample (block) also
gives one value of the selector's cost, and their spread gives the noise of the mean (the standard
error, std / sqrt(blocks)).

- Round 1 ends with Zeus's selector on the means. Limits whose cost is within `z` standard errors
  of the pick's (for `max_slowdown`: whose step time is within noise of the allowed slowdown, with
  the pick and the lowest limit surely within it) are *close*: with `confirm` on, they are
  measured once more and the samples pooled.
- The final choice is Zeus's pick on the pooled means, then the *safer* limit where the noise
  cannot tell them apart: the highest limit whose cost is within the noise of the pick's (for
  `max_slowdown`, the lowest limit whose slowdown is within the factor by more than the noise).
  Safer means higher: a higher limit runs faster and nearer the card's usual setting, so a
  wrong call costs at most the (unmeasurable) energy difference, while a too-low one can cost
  a real slowdown.

Without noise (every block of a limit equal) this is exactly Zeus's selector.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from wattwise.methods.power.profiler import Decision, Sample
from wattwise.methods.shared.selection import Rule
from wattwise.methods.shared.zeus_adapter import Measurement, cost_of, make_selector, select

Z_CLOSE = 2.0  # standard errors within which a limit is measured again (confirmed)
Z_SAFER = 1.0  # standard errors within which the final choice goes to the safer limit


@dataclass(frozen=True)
class LimitStats:
    """One limit's per-batch figures over all its samples, and their spread."""

    limit_W: int
    steps: int
    energy_J: float  # per batch
    time_s: float  # per batch
    block_energy_J: tuple[float, ...]  # per batch, each block
    block_time_s: tuple[float, ...]

    @property
    def blocks(self) -> int:
        return len(self.block_energy_J)

    def rsd(self, values: Sequence[float]) -> float:
        """Relative standard deviation across blocks (0 with one block)."""
        mean = statistics.fmean(values)
        return statistics.stdev(values) / mean if len(values) > 1 and mean > 0 else 0.0

    def as_record(self) -> dict[str, float | int]:
        return {
            "step_time_s": self.time_s,
            "step_energy_J": self.energy_J,
            "steps": self.steps,
            "blocks": self.blocks,
            "time_rsd": self.rsd(self.block_time_s),
            "energy_rsd": self.rsd(self.block_energy_J),
        }


def summarize(samples: Sequence[Sample]) -> dict[int, LimitStats]:
    """Per-limit figures, highest limit first."""
    out: dict[int, LimitStats] = {}
    for limit in sorted({s.limit_W for s in samples}, reverse=True):
        mine = [s for s in samples if s.limit_W == limit and s.steps > 0]
        steps = sum(s.steps for s in mine)
        out[limit] = LimitStats(
            limit_W=limit,
            steps=steps,
            energy_J=sum(s.energy_J for s in mine) / steps,
            time_s=sum(s.time_s for s in mine) / steps,
            block_energy_J=tuple(s.energy_J / s.steps for s in mine),
            block_time_s=tuple(s.time_s / s.steps for s in mine),
        )
    return out


def _se(values: Sequence[float]) -> float:
    """The standard error of the mean of `values` (0 with one value)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def _measurements(stats: dict[int, LimitStats]) -> list[Measurement]:
    return [Measurement(limit, s.energy_J, s.time_s) for limit, s in stats.items()]


def zeus_pick(stats: dict[int, LimitStats], rule: Rule) -> int:
    """Zeus's selector on the per-batch means (highest limit first, so exact ties go to the higher)."""
    selector = make_selector(rule.selector, rule.eta, rule.max_slowdown, rule.world_size)
    return select(selector, _measurements(stats))


def _pooled_rsd(per_limit_blocks: Sequence[Sequence[float]]) -> float:
    """The relative spread of one block, pooled over every limit (more blocks than any one limit has)."""
    variances = [
        statistics.variance(values) / statistics.fmean(values) ** 2
        for values in per_limit_blocks
        if len(values) > 1 and statistics.fmean(values) > 0
    ]
    return math.sqrt(statistics.fmean(variances)) if variances else 0.0


def _costs(stats: dict[int, LimitStats], rule: Rule) -> dict[int, tuple[float, float]]:
    """Each limit's cost (of its per-batch means, as Zeus sees it) and its standard error.

    The error is the larger of the limit's own (from its blocks) and the pooled one (every limit's
    blocks: a steadier estimate than a few blocks give).
    """
    max_power = max(stats) * rule.world_size

    def cost(e: float, t: float) -> float:
        return cost_of(rule.selector, e, t, eta=rule.eta, max_power_W=max_power)

    blocks = {
        limit: [cost(e, t) for e, t in zip(s.block_energy_J, s.block_time_s, strict=True)]
        for limit, s in stats.items()
    }
    pooled = _pooled_rsd(list(blocks.values()))
    out = {}
    for limit, s in stats.items():
        mean = cost(s.energy_J, s.time_s)
        out[limit] = (mean, max(_se(blocks[limit]), pooled * mean / math.sqrt(len(blocks[limit]))))
    return out


def _slowdown_margins(stats: dict[int, LimitStats], rule: Rule) -> dict[int, tuple[float, float]]:
    """max_slowdown: each limit's room under the allowed step time (factor x the top limit's), and noise."""
    pooled = _pooled_rsd([s.block_time_s for s in stats.values()])

    def se(s: LimitStats) -> float:
        return max(_se(s.block_time_s), pooled * s.time_s / math.sqrt(s.blocks))

    top = stats[max(stats)]
    out = {}
    for limit, s in stats.items():
        noise = se(s) if limit == top.limit_W else math.hypot(se(s), rule.max_slowdown * se(top))
        out[limit] = (rule.max_slowdown * top.time_s - s.time_s, noise)
    return out


def close_to(pick: int, stats: dict[int, LimitStats], rule: Rule, z: float = Z_CLOSE) -> list[int]:
    """The limits the noise cannot tell from `pick` (the pick included), highest first."""
    if rule.selector == "max_slowdown":
        margins = _slowdown_margins(stats, rule)
        near = [lim for lim, (m, noise) in margins.items() if abs(m) <= z * noise and noise > 0]
        if not near:
            return []
        # with the pick and the lowest limit surely within the factor: the safer alternative
        sure = [lim for lim, (m, noise) in margins.items() if m > z * noise or lim == max(stats)]
        return sorted(set(near) | {pick, min(sure)}, reverse=True)
    costs = _costs(stats, rule)
    best, best_se = costs[pick]
    near = [lim for lim, (c, se) in costs.items() if lim != pick and c - best <= z * math.hypot(se, best_se)]
    return sorted(set(near) | {pick}, reverse=True) if near else []


def safer_choice(pick: int, stats: dict[int, LimitStats], rule: Rule, z: float = Z_SAFER) -> int:
    """Where the noise cannot separate limits from Zeus's pick, the safer (higher) one; see the module doc."""
    if rule.selector == "max_slowdown":
        margins = _slowdown_margins(stats, rule)
        # feasible by more than the noise (without noise: Zeus's own rule); the highest limit always is
        sure = [lim for lim, (m, noise) in margins.items() if m >= z * noise or lim == max(stats)]
        return max(pick, min(sure))
    costs = _costs(stats, rule)
    best, best_se = costs[pick]
    ties = [lim for lim, (c, se) in costs.items() if c - best <= z * math.hypot(se, best_se)]
    return max(ties)


def decide(samples: Sequence[Sample], final: bool, rule: Rule, confirm: bool) -> Decision:
    """Round 1: choose, or ask to confirm the close candidates; the final round: choose."""
    stats = summarize(samples)
    pick = zeus_pick(stats, rule)
    if not final and confirm:
        near = close_to(pick, stats, rule, Z_CLOSE)
        if len(near) > 1:
            return Decision(confirm_W=tuple(near))
    return Decision(chosen_W=safer_choice(pick, stats, rule, Z_SAFER))
