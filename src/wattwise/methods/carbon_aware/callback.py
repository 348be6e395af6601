"""Carbon-aware start: wait, up to a deadline, for the cleanest forecast window (`+optim=carbon_aware`).

Method card
-----------
What it does
    Before the fit starts (the callback's `setup`, before the energy meter opens its first window),
    it asks the provider configured under `energy.provider` (Electricity Maps'
    `/v3/carbon-intensity/forecast`) for the zone of `energy.region`, scores every start time the
    forecast offers up to `deadline_h` hours from now by the mean intensity over the run's
    predicted duration (`duration_s`), and waits for the lowest (ties: the earliest). It logs when
    it will start and why (the window's intensity against starting now), and starts at once when no
    forecast is available (no region, no key, an error, a timeout, an empty forecast) or when now
    is already the best. In a sweep every job asks and decides for itself; under DDP the first
    process asks and the others wait with it.

What it saves
    Carbon, not energy: the same joules at a lower intensity. How much depends on the grid's daily
    swing (solar-heavy or wind-heavy zones swing by 2x or more; hydro or nuclear grids barely move).
    The summary records the forecast intensity of the chosen window and of starting now
    (`carbon_aware/window_gCO2_per_kWh`, `carbon_aware/now_gCO2_per_kWh`). The run's own
    `carbon/gCO2e` uses the intensity read at fit start (after the wait).

What it costs
    Time: up to `deadline_h` of waiting (bounded: the wait never runs past the deadline, sleeps in
    steps of at most a minute, and Ctrl+C ends it as it ends a run). One forecast request, bounded
    by `energy.provider.timeout_s`, no retry. The process holds its memory (and a GPU, if set up)
    while it waits: on a shared GPU node prefer a scheduler's delayed start.

When not to use it
    Runs someone waits for; runs shorter than the forecast's resolution (an hour) gain little;
    zones whose forecast is flat.

How it composes
    It acts only before the fit, so it composes with every other method. It needs no energy
    measurement (it reads only the forecast) and is not part of `green` (waiting is the user's call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import lightning as L

from wattwise.energy.carbon import provider_settings
from wattwise.energy.intensity_provider import ForecastPoint, ProviderError, make_provider
from wattwise.energy.regions import lookup_region
from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod
from wattwise.methods.shared.settings import MethodSettings, number, setting

log = logging.getLogger(__name__)

KEY = "callbacks.carbon_aware"
SLOT = timedelta(hours=1)  # the length of a forecast point when the forecast does not say
MAX_SLEEP_S = 60.0  # the wait sleeps in steps, so the clock is re-read and Ctrl+C is seen promptly


@dataclass(frozen=True)
class StartPlan:
    start: datetime
    wait_s: float
    window_gCO2_per_kWh: float | None  # forecast mean over the chosen window
    now_gCO2_per_kWh: float | None  # forecast mean over the window starting now
    reason: str


def window_mean(points: Sequence[ForecastPoint], start: datetime, duration: timedelta) -> tuple[float, float]:
    """Mean forecast intensity over [start, start + duration), overlap-weighted, and the seconds covered."""
    end = start + duration
    weighted, covered = 0.0, 0.0
    for i, p in enumerate(points):
        p_end = points[i + 1].start if i + 1 < len(points) else p.start + SLOT
        overlap = (min(end, p_end) - max(start, p.start)).total_seconds()
        if overlap > 0:
            weighted += p.gCO2_per_kWh * overlap
            covered += overlap
    return (weighted / covered if covered else float("nan")), covered


def plan_start(
    points: Sequence[ForecastPoint], now: datetime, duration_s: float, deadline: datetime
) -> StartPlan:
    """The start, no later than `deadline`, whose window over `duration_s` has the lowest forecast mean.

    Candidates are now and each forecast point's start in (now, deadline]; a later candidate counts
    only when the forecast covers its whole window (now counts on what is covered).
    """
    duration = timedelta(seconds=duration_s)
    now_mean, now_covered = window_mean(points, now, duration)
    if now_covered == 0:
        return StartPlan(now, 0.0, None, None, "the forecast does not cover now: starting at once")
    best, best_mean = now, now_mean
    for p in points:
        if not now < p.start <= deadline:
            continue
        mean, covered = window_mean(points, p.start, duration)
        if covered + 1e-6 >= duration.total_seconds() and mean < best_mean:
            best, best_mean = p.start, mean
    wait_s = (best - now).total_seconds()
    if wait_s <= 0:
        reason = f"now is the cleanest start before the deadline ({now_mean:.0f} gCO2e/kWh forecast)"
    else:
        reason = (
            f"the window from {best:%Y-%m-%d %H:%M} UTC is forecast at {best_mean:.0f} gCO2e/kWh, "
            f"against {now_mean:.0f} starting now ({100 * (1 - best_mean / now_mean):.0f} % less)"
        )
    return StartPlan(best, max(wait_s, 0.0), best_mean, now_mean, reason)


def wait_until(
    target_s: float, deadline_s: float, clock: Callable[[], float], sleep: Callable[[float], None]
) -> float:
    """Sleep until `target_s` (clock seconds), never past `deadline_s`; returns the seconds waited."""
    start = clock()
    end = min(target_s, deadline_s)
    while (left := end - clock()) > 0:
        sleep(min(left, MAX_SLEEP_S))
    return clock() - start


@dataclass(frozen=True)
class CarbonAwareSettings(MethodSettings):
    """`callbacks.carbon_aware.*`: the keys, their defaults and their checks (see CarbonAware's Args).

    `region` and `provider` are the energy meter's (`energy.region`, `energy.provider`); they are
    checked by the tables and the provider's own settings, so their errors name those keys.
    """

    deadline_h: float = setting(12.0, number(low=0), doc="start no later than this many hours from now")
    duration_s: float = setting(3600.0, number(low=1), doc="the run's predicted duration, seconds")
    region: str | None = setting(None, doc="the zone whose forecast is asked (energy.region)")
    provider: Mapping[str, Any] | None = setting(None, doc="the forecast's provider (energy.provider)")

    def check(self, key: str) -> None:
        if self.region is not None:
            lookup_region(self.region)  # an unknown region fails now, in one line naming energy.region


class CarbonAware(EnergyMethod):
    """Delays the fit's start to the cleanest forecast window before a deadline (see the module doc).

    Args (config keys `callbacks.carbon_aware.*`, checked by `CarbonAwareSettings`):
        deadline_h: start no later than this many hours from now (>= 0).
        duration_s: the run's predicted duration in seconds (>= 1), the window each start is scored over.
        region: the zone whose forecast is asked (`energy.region`; null: start at once).
        provider: the forecast's provider (`energy.provider`; null or no key: start at once).
        if_not_applicable: `fail` or `skip` (it applies everywhere).
    """

    name = "carbon_aware"
    figure_prefix = "carbon_aware/"
    summary_keys = ("carbon_aware/decision", "carbon_aware/reason", "carbon_aware/wait_s")
    # It moves the run in time; in sweeps and the benchmark, offline, it would repeat the baseline.
    in_comparisons = False

    # Injectable for tests: the wall clock (epoch seconds) and the sleep.
    clock: Callable[[], float] = staticmethod(time.time)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(
        self,
        deadline_h: float = 12.0,
        duration_s: float = 3600.0,
        region: str | None = None,
        provider: Mapping[str, Any] | None = None,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable)
        self.settings = s = CarbonAwareSettings.build(
            KEY, deadline_h=deadline_h, duration_s=duration_s, region=region, provider=provider
        )
        self.deadline_h, self.duration_s, self.region = s.deadline_h, s.duration_s, s.region
        self.provider = provider_settings(s.provider)
        self.decision: str | None = None
        self.reason: str | None = None
        self.wait_s = 0.0
        self.plan: StartPlan | None = None

    def decide(self) -> StartPlan | None:
        """Ask the forecast and plan the start; None (start at once) when no forecast is available."""
        now_s = self.clock()
        now = datetime.fromtimestamp(now_s, tz=timezone.utc)
        if self.region is None:
            self.reason = "no energy.region: no zone to ask a forecast for; starting at once"
            return None
        if self.provider is None or not self.provider.enabled:
            self.reason = "no energy.provider key or endpoint: no forecast; starting at once"
            return None
        zone = lookup_region(self.region).zone
        client = make_provider(self.provider)
        try:
            points = client.forecast(zone)
        except ProviderError as err:
            self.reason = f"no forecast ({err}); starting at once"
            return None
        if not points:
            self.reason = f"{client.name} sent an empty forecast for {zone}; starting at once"
            return None
        deadline = now + timedelta(hours=self.deadline_h)
        plan = plan_start(points, now, self.duration_s, deadline)
        self.reason = f"zone {zone}: {plan.reason}"
        return plan

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or not self.active or self.decision is not None:
            return
        self.status = STATUS_ACTIVE
        deadline_s = self.clock() + self.deadline_h * 3600.0
        distributed = trainer is not None and trainer.world_size > 1
        if not distributed or trainer.is_global_zero:
            self.plan = self.decide()
        if distributed:  # one process asks and decides; all wait alike (no collective runs out of step)
            self.plan, self.reason = trainer.strategy.broadcast((self.plan, self.reason), src=0)
        if self.plan is None or self.plan.wait_s <= 0:
            self.decision = "started_now"
            log.info("carbon_aware: %s", self.reason)
            return
        self.decision = "waited"
        log.info(
            "carbon_aware: starting at %s UTC, in %.0f min: %s",
            f"{self.plan.start:%Y-%m-%d %H:%M}",
            self.plan.wait_s / 60,
            self.reason,
        )
        self.wait_s = wait_until(self.clock() + self.plan.wait_s, deadline_s, self.clock, self.sleep)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active and self.decision is not None:
            pl_module.log("carbon_aware/wait_s", self.wait_s, on_epoch=True, rank_zero_only=True)

    def method_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "carbon_aware/decision": self.decision or "not_started",
            "carbon_aware/reason": self.reason or "",
            "carbon_aware/wait_s": self.wait_s,
        }
        if self.plan is not None and self.plan.window_gCO2_per_kWh is not None:
            out["carbon_aware/start_at"] = self.plan.start.isoformat(timespec="minutes")
            out["carbon_aware/window_gCO2_per_kWh"] = self.plan.window_gCO2_per_kWh
            out["carbon_aware/now_gCO2_per_kWh"] = self.plan.now_gCO2_per_kWh
        return out

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        if summary.get("carbon_aware/decision"):
            wait = summary.get("carbon_aware/wait_s") or 0.0
            rows.append(
                (
                    "carbon-aware start",
                    f"waited {wait / 60:.0f} min: {summary.get('carbon_aware/reason', '')}",
                )
            )
        return rows
