"""Which limits to try, how long a stretch of training lasts between pauses, and the dry-run plan."""

from __future__ import annotations

import math
from typing import Any


def limits_W(constraints_mW: tuple[int, int], pl_step_W: int) -> list[int]:
    """The limits to profile, highest first: the card's minimum, every `pl_step_W` above it, and its maximum.

    The grid is anchored at the minimum, so the minimum (the energy optimum of many jobs) is always
    tried, and the maximum (the card's usual setting and `max_slowdown`'s reference) is added even
    when the range is not a multiple of the step: RTX 6000 (100-260 W, 25 W) gets 260, 250, 225,
    ..., 100. Stepping down from the maximum instead (Zeus's own grid) tries 260, 235, ..., 110 and
    never the minimum.
    """
    low, high = (mw // 1000 for mw in constraints_mW)
    grid = list(range(low, high, pl_step_W)) + [high]
    return sorted(set(grid), reverse=True)


def segment_batches(batches_per_epoch: float, val_check_batch: float | None) -> float:
    """The most training batches that run without a pause (an epoch end or a validation run)."""
    segment = batches_per_epoch
    if val_check_batch is not None and math.isfinite(val_check_batch) and val_check_batch > 0:
        segment = min(segment, val_check_batch)
    return segment


def profiling_steps_total(counts: tuple[int, int, int], n_limits: int) -> int:
    """Batches a first pass takes without pauses: the wait, then warm-up + profile at each limit."""
    wait, warmup, profile = counts
    return wait + n_limits * (warmup + profile)


def dry_run_plan(
    *,
    gpu: str,
    access: str,
    current_limit_W: int | None,
    limits: list[int],
    counts: tuple[int, int, int],
    selector: str,
    profile_file: str | None,
    cached: bool,
    would_choose_W: int | None,
    forced_by_env: bool,
) -> dict[str, Any]:
    """What a real run would do (`power/dry_run` in summary.json); nothing is changed to make it."""
    wait, warmup, profile = counts
    return {
        "gpu": gpu,
        "access": access,
        "current_limit_W": current_limit_W,
        "would_profile_W": limits,
        "wait_steps": wait,
        "warmup_steps": warmup,
        "profile_steps": profile,
        "profiling_steps_total": profiling_steps_total(counts, len(limits)),
        "selector": selector,
        "profile_file": profile_file,
        "cached_profile": cached,
        "would_choose_W": would_choose_W,
        "changed": "nothing",
        "forced_by_env": forced_by_env,
    }
