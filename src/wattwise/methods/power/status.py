"""Values of `power/status` (summary.json) and the reasons power-limit tuning steps aside."""

from __future__ import annotations

from wattwise.methods.base import STATUS_IDLE, STATUS_SKIPPED

# Shared with every method (wattwise.methods.base).
IDLE = STATUS_IDLE  # built, fit not started
SKIPPED = STATUS_SKIPPED  # stepped aside: `power/reason` says why (REASONS below)

# Power's own: the method ran.
DRY_RUN = "dry_run"  # reported what it would do, changed nothing
NO_PERMISSION = "no_permission"  # not allowed to change limits: trained at the current one
PROFILING = "profiling"  # still profiling
INCOMPLETE = "incomplete"  # fit ended before every limit was profiled
TUNED = "tuned"  # profiled, chose, trained at the choice
CACHED = "cached"  # a cached profile chose; no profiling
ERROR = "error"  # the GPU refused something else; trained at the original limit

# Why it steps aside (`power/reason`), each with the text of the one line that says so.
NO_GPU = "no_gpu"
NO_METER = "no_meter"
NO_POWER_LIMITS = "no_power_limits"
EPOCH_TOO_SHORT = "epoch_too_short"
REASONS = {
    NO_GPU: "no GPU visible to Zeus, so there is no power limit to tune",
    NO_METER: "it measures each limit with the Zeus energy meter (energy=auto); energy=estimate/off has none",
    NO_POWER_LIMITS: "cannot read GPU {gpu}'s power limits ({err})",
    EPOCH_TOO_SHORT: (
        "{batches} training batch(es) per epoch or between validation runs are too few to profile a limit "
        "(2 needed: one after each pause is not measured)"
    ),
}


def reason_text(code: str, **details: object) -> str:
    """The step-aside line for `code`, ending with the code itself, e.g. `... (no_gpu)`."""
    return f"{REASONS[code].format(**details)} ({code})"


ZERO_ENERGY_HINT = (
    "a profile window read 0 J (shorter than the GPU energy counter's update period); "
    "raise callbacks.power.profile_steps or the batch size so each window lasts longer"
)
