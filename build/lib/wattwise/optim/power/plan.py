"""Which limits to try, how many steps each gets inside an epoch, and the dry-run plan."""

from __future__ import annotations

import math
from typing import Any


def limits_W(constraints_mW: tuple[int, int], pl_step_W: int) -> list[int]:
    """The limits Zeus profiles: from the card's maximum down to its minimum, `pl_step_W` apart."""
    low, high = constraints_mW
    return [mw // 1000 for mw in range(high, low - 1, -pl_step_W * 1000)]


def fit_counts(batches_per_epoch: float, wait: int, warmup: int, profile: int) -> tuple[int, int, int] | None:
    """Wait, warm-up and profile steps that let one limit finish inside an epoch.

    Zeus needs 1 + warm-up + profile steps in an epoch for a limit (plus the wait steps
    in the first one), else the epoch end restarts it, forever. Shrinks the counts to
    fit, keeping their ratio; None when the epoch is too short (under 3 batches).
    """
    if not math.isfinite(batches_per_epoch):
        return wait, warmup, profile
    n = int(batches_per_epoch)
    budget = n - 1 - wait
    if budget < 2:
        wait, budget = 0, n - 1
    if budget < 2:
        return None
    if warmup + profile <= budget:
        return wait, warmup, profile
    new_profile = max(1, min(budget - 1, int(budget * profile / (warmup + profile))))
    return wait, max(1, budget - new_profile), new_profile


def profiling_steps_total(counts: tuple[int, int, int], n_limits: int) -> int:
    wait, warmup, profile = counts
    return wait + 1 + n_limits * (warmup + profile)


def dry_run_plan(
    *,
    gpu: str,
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
