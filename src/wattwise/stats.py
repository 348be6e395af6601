"""Statistics of comparisons: paired ratios, medians with bootstrap intervals, energy to target.

Shared by the benchmark (bench/energy_bench.py, through bench/stats.py) and `wattwise.compare`.
Everything here is plain functions on lists, so it is tested on hand-made samples
(tests/test_bench_stats.py, tests/test_compare.py) and reused by any harness.

- `median_ci`: the median and a 95% percentile-bootstrap interval (`scipy.stats.bootstrap`, fixed
  `random_state`: the same sample always gives the same interval, so reports are reproducible).
- `paired_ratios` / `paired_deltas`: variant against baseline *of the same seed*, the unit of
  pairing; a seed missing on either side is left out of the pairs (and counted by the caller).
- `paired_ratio_ci`: the paired ratio for *few* pairs (a sweep's default 3 seeds): geometric mean
  of the ratios with a 95% Student-t interval on their logarithms. A percentile bootstrap of the
  median of 3 ratios is [min, max] of the three, a 75% interval (a method against itself would
  look different in 1 sweep of 4); the t interval keeps its 95% at n = 3 (wider, as it should be).
- `energy_to_target`: joules until the monitored metric (validation accuracy for the benchmark's
  classifier) first reaches a target, read from a run's per-epoch record (`mode="min"`: a loss
  first falls to it); None when it never does. Such a run is *not reached*: it enters medians as
  +infinity (worse than any run that got there), never as zero and never dropped, so a variant
  that misses the target in most seeds has an infinite median and says so.
- `rotated`: the order of interleaved variants in one round (A B C, B C A, C A B, ...), so a machine
  that drifts over minutes biases none (the benchmarks and the comparison sweeper).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 9999
RANDOM_STATE = 12345
# scipy's percentile interpolation turns inf - inf into nan: "not reached" rides through the
# bootstrap as this finite stand-in (small enough to square) and comes back as +inf (anything
# >= HUGE / 4 after averaging).
HUGE = 1e150


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval; `low`/`high` are None when n < 2 (no interval to give)."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    not_reached: int = 0  # how many of the n values were 'not reached' (+inf)

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def fmt(self, spec: str = "{:.2f}", scale: float = 1.0) -> str:
        def one(v: float | None) -> str:
            if v is None:
                return "-"
            return "inf" if math.isinf(v) else spec.format(v * scale)

        if self.value is None:
            return "-"
        text = one(self.value)
        if self.has_interval:
            text += f" [{one(self.low)}, {one(self.high)}]"
        return text


def _clean(values: Iterable[float | None], none_is_inf: bool) -> list[float]:
    out = []
    for v in values:
        if v is None:
            if none_is_inf:
                out.append(math.inf)
            continue
        v = float(v)
        if math.isnan(v):
            continue
        out.append(v)
    return out


def bootstrap_ci(
    values: Sequence[float | None],
    statistic: Callable[[np.ndarray], float] = np.median,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    random_state: int = RANDOM_STATE,
    none_is_inf: bool = False,
) -> Estimate:
    """`statistic` of `values` with a percentile-bootstrap interval (scipy.stats.bootstrap).

    None values are dropped, or with `none_is_inf` counted as +inf ('not reached'). A constant
    sample gives the degenerate interval [c, c]; one value gives no interval.
    """
    from scipy.stats import bootstrap

    xs = _clean(values, none_is_inf)
    n_inf = sum(math.isinf(v) for v in xs)
    if not xs:
        return Estimate(None, None, None, 0, 0)
    finite = np.array([HUGE if math.isinf(v) else v for v in xs], dtype=float)

    def back(v: float) -> float:
        return math.inf if v >= HUGE / 4 else float(v)

    point = back(float(statistic(finite)))
    if len(xs) < 2:
        return Estimate(point, None, None, len(xs), n_inf)
    if np.all(finite == finite[0]):  # scipy warns and may return nan on a degenerate sample
        return Estimate(point, point, point, len(xs), n_inf)
    res = bootstrap(
        (finite,),
        lambda s, axis: statistic(s, axis=axis),
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(random_state),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Estimate(point, back(low), back(high), len(xs), n_inf)


def median_ci(values: Sequence[float | None], none_is_inf: bool = False, **kwargs) -> Estimate:
    """The median with its 95% bootstrap interval."""
    return bootstrap_ci(values, np.median, none_is_inf=none_is_inf, **kwargs)


def paired_ratios(
    variant: Mapping[object, float | None],
    baseline: Mapping[object, float | None],
    none_is_inf: bool = False,
) -> list[float]:
    """variant / baseline for each seed present in both with a positive baseline.

    With `none_is_inf`, a variant's None (not reached) against a reached baseline is +inf; seeds
    where the baseline has None are left out (there is nothing to compare with)."""
    out = []
    for seed, b in baseline.items():
        if seed not in variant or b is None or not b > 0 or (isinstance(b, float) and math.isnan(b)):
            continue
        v = variant[seed]
        if v is None:
            if none_is_inf:
                out.append(math.inf)
            continue
        if isinstance(v, float) and math.isnan(v):
            continue
        out.append(float(v) / float(b))
    return out


def paired_deltas(
    variant: Mapping[int, float | None], baseline: Mapping[int, float | None], scale: float = 100.0
) -> list[float]:
    """(variant - baseline) x scale per seed present in both: accuracy deltas in points by default."""
    out = []
    for seed, b in baseline.items():
        v = variant.get(seed)
        if v is None or b is None or math.isnan(float(v)) or math.isnan(float(b)):
            continue
        out.append(scale * (float(v) - float(b)))
    return out


def ratio_ci(variant, baseline, none_is_inf: bool = False, **kwargs) -> Estimate:
    """Median of the paired ratios with its bootstrap interval."""
    return median_ci(paired_ratios(variant, baseline, none_is_inf), none_is_inf=none_is_inf, **kwargs)


def delta_ci(variant, baseline, scale: float = 100.0, **kwargs) -> Estimate:
    """Median of the paired differences (points for accuracies) with its bootstrap interval."""
    return median_ci(paired_deltas(variant, baseline, scale), **kwargs)


def paired_ratio_ci(
    variant: Mapping[object, float | None],
    baseline: Mapping[object, float | None],
    confidence: float = CONFIDENCE,
) -> Estimate:
    """Geometric mean of the paired ratios with a Student-t interval on their logarithms.

    Pairs as `paired_ratios` (keys present on both sides, positive figures). One pair gives the
    ratio and no interval; identical log ratios give the degenerate interval at that ratio."""
    from scipy.stats import t as student_t

    logs = [math.log(r) for r in paired_ratios(variant, baseline) if r > 0 and math.isfinite(r)]
    n = len(logs)
    if n == 0:
        return Estimate(None, None, None, 0)
    mean = sum(logs) / n
    if n == 1:
        return Estimate(math.exp(mean), None, None, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n)


def energy_to_target(
    curve: Iterable[tuple[int, float | None, float | None]], target: float, mode: str = "max"
) -> tuple[float | None, int | None]:
    """(joules, epoch) at the first epoch whose metric is >= `target` (`mode="min"`: <= it, for a loss);
    (None, None) if never.

    `curve` is the run's per-epoch record (epoch, monitored metric, cumulative J), in any order; epochs
    with a missing value are skipped, and a reached epoch with no energy figure gives (None, epoch)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be min or max, got {mode!r}")
    for epoch, value, joules in sorted(curve, key=lambda r: r[0]):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if (value >= target) if mode == "max" else (value <= target):
            ok = joules is not None and not (isinstance(joules, float) and math.isnan(joules))
            return (float(joules) if ok else None), int(epoch)
    return None, None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower energy x, higher accuracy y)."""
    front = []
    for i, (x, y) in enumerate(points):
        if any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            continue
        front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def rotated(items: Sequence[Any], k: int) -> list[Any]:
    """`items` rotated left by k (A B C, k=1: B C A)."""
    if not items:
        return []
    k %= len(items)
    return [*items[k:], *items[:k]]
