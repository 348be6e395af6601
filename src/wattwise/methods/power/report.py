"""What the tuner reports: its `power/*` figures, its table row and the lines it logs, from its state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wattwise.methods.power.fit import FitState
from wattwise.methods.power.settings import PowerSettings


def selector_text(s: PowerSettings) -> str:
    """The selector with its parameter, as figures and log lines name it."""
    if s.selector == "zeus_cost":
        return f"zeus_cost(eta={s.eta})"
    if s.selector == "max_slowdown":
        return f"max_slowdown({s.max_slowdown})"
    return s.selector


def method_figures(fit: FitState, selector: str, restored: bool | None) -> dict[str, Any]:
    """`power/*` figures for summary.json: limits, the profile, the dry-run plan (none before the card)."""
    if fit.original_limit_W is None:
        return {}
    out: dict[str, Any] = {
        "power/limit_W": fit.trained_at_W(),
        "power/original_limit_W": fit.original_limit_W,
        "power/selector": fit.adopted_selector or selector,
        "power/access": fit.access,
    }
    optional: dict[str, Any] = {
        "power/source": fit.source,
        "power/restored": restored,
        "power/limits_tried_W": list(fit.limits) if fit.limits else None,
        "power/profile": fit.profile or None,
        "power/confirmed_W": fit.confirmed_W or None,
        "power/batches_at_W": _by_limit(fit.batches_at, lambda n: n),
        "power/seconds_at_W": _by_limit(fit.seconds_at, lambda s: round(s, 3)),
        "power/limit_log": [list(x) for x in fit.limit_log] or None,
        "power/profile_file": str(fit.profile_file) if fit.profile_file is not None else None,
        "power/reprofiles": fit.reprofiles or None,
        "power/dry_run": fit.plan,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


def _by_limit(values: Mapping[int, Any], fmt: Any) -> dict[str, Any] | None:
    """Per-limit figures keyed by watts (highest first), None when empty."""
    return {str(w): fmt(v) for w, v in sorted(values.items(), reverse=True)} or None


def table_row(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The final table's line: status, the limit trained at and who chose it."""
    if summary.get("power/status") is None:
        return []
    limit = summary.get("power/limit_W")
    source = f" (by the {summary['power/source']})" if summary.get("power/source") else ""
    text = f"{summary['power/status']}" + (f", {limit:g} W" if limit else "") + source
    return [("power limit (power)", text)]


def profile_table(profile: Mapping[str, Mapping[str, float]]) -> str:
    """The profile in one log line: per-batch time and energy at each limit, with the energy's spread."""
    return "; ".join(
        f"{w} W: {m['step_time_s']:.3g} s, {m['step_energy_J']:.4g} J per batch "
        f"(+-{100 * m['energy_rsd']:.1f}%)"
        for w, m in profile.items()
    )


def no_permission_line(err: BaseException, route: str, original_W: int | None) -> str:
    return (
        f"No permission to change the GPU's power limit ({err}; {route}). Training goes on at "
        f"{original_W} W; power/status=no_permission. Grant SYS_ADMIN or run Zeus's daemon (zeusd) to tune."
    )


def stopped_line(err: BaseException, hint: str, original_W: int | None) -> str:
    why = hint or f"the GPU refused a power-limit change ({err})"
    return f"Power-limit tuning stopped: {why}; training goes on at {original_W} W, power/status=error."


def unfinished_line(fit: FitState) -> str:
    """The warning when fit ends mid-profile: how far it got and where the run trained."""
    assert fit.profiler is not None
    measured = len({s.limit_W for s in fit.profiler.samples})
    return (
        f"Power-limit tuning did not finish: fit ended after {measured} of {len(fit.limits)} limits were "
        "measured, so no limit was chosen (power/status=incomplete); the run trained mostly at "
        f"{fit.trained_at_W()} W (batches per limit: {fit.batches_at}). Give it more training batches or "
        "fewer/shorter profiles."
    )


def dry_run_line(fit: FitState, s: PowerSettings, would_choose: int | None, forced: bool) -> str:
    """What a real run would do, in one line."""
    assert fit.plan is not None
    cached = f"; the cached profile {fit.profile_file} would choose {would_choose} W" if would_choose else ""
    return (
        f"Power dry run on {fit.gpu_name} (limit now {fit.original_limit_W} W, changes via {fit.access}): "
        f"would profile {', '.join(map(str, fit.limits))} W, {s.warmup_steps} warm-up + {s.profile_steps} "
        f"profile steps each (~{fit.plan['profiling_steps_total']} steps), select by {selector_text(s)}"
        f"{cached}. Nothing was changed{' (WATTWISE_POWER_DRY_RUN=1 is set)' if forced else ''}."
    )
