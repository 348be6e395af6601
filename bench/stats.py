"""The benchmark's statistics live in the package (`wattwise.stats`), shared with `wattwise.compare`.

The bench scripts import this module by its file name (`import stats`); it re-exports the package's.
"""

from wattwise.stats import (  # noqa: F401
    CONFIDENCE,
    HUGE,
    N_RESAMPLES,
    RANDOM_STATE,
    Estimate,
    bootstrap_ci,
    delta_ci,
    energy_to_target,
    median_ci,
    paired_deltas,
    paired_ratio_ci,
    paired_ratios,
    pareto_front,
    ratio_ci,
    rotated,
)
