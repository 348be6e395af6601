"""The tuner's core: its settings, its per-fit state, the card and the primitives every phase uses.

`Power` (callback.py) adds the Lightning hooks and the profiling; `JointSearch` (joint.py) the
lending of the card to the batch-size finder. Everything here acts on one `FitState` per fit and the
`LimitGuard`, so no phase resets fields of another by hand.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L

from wattwise.methods.base import EnergyMethod
from wattwise.methods.power import choose, report
from wattwise.methods.power import profile_cache as cache
from wattwise.methods.power import status as st
from wattwise.methods.power.fit import FitState
from wattwise.methods.power.guard import LimitGuard
from wattwise.methods.power.settings import PowerSettings
from wattwise.methods.shared.zeus_adapter import GpuError, open_gpu

log = logging.getLogger("wattwise.methods.power.callback")  # one logger for the whole method


class TunerCore(EnergyMethod):
    """State and primitives of the power tuner (not a method by itself: `Power` is)."""

    settings: PowerSettings
    fit: FitState
    profile_dir: Path | None
    dry_run: bool
    forced_dry_run: bool
    _guard: LimitGuard

    def requirements(self) -> frozenset[str]:
        return frozenset({"energy"})  # it measures each limit with the energy monitor's Zeus meter

    # ---- state ----------------------------------------------------------------------------
    def _reset(self) -> None:
        """A new fit: a fresh per-fit record, the guard emptied (nothing else to reset by hand)."""
        self.status = st.IDLE
        self.skipped_reason = None
        self.fit = FitState()
        self._guard.remove()
        self._guard.reset()

    @property
    def chosen_limit_W(self) -> int | None:
        return self.fit.chosen_limit_W

    @property
    def profile(self) -> dict[str, dict[str, float]]:
        return self.fit.profile

    @property
    def source(self) -> str | None:
        return self.fit.source

    @property
    def restored(self) -> bool | None:
        """True once the original limit and persistence mode are back; None if nothing was changed."""
        return self._guard.restored

    def _profile_path(self, key: dict[str, Any]) -> Path | None:
        return cache.profile_path(self.profile_dir, key)

    def _rule(self) -> choose.Rule:
        s = self.settings
        return choose.Rule(s.selector, s.eta, s.max_slowdown, self.fit.world_size)

    # ---- the card -----------------------------------------------------------------------------
    def _open(self, trainer: L.Trainer) -> None:
        """Find the Zeus monitor and the card, read its limits (steps aside where it cannot)."""
        monitor = self.energy_monitor
        zeus_monitor = monitor.zeus_monitor if monitor is not None else None
        if zeus_monitor is None:
            on_cuda = trainer.strategy.root_device.type == "cuda"
            self._step_aside(trainer, st.NO_METER if on_cuda else st.NO_GPU)
            return
        if not zeus_monitor.gpu_indices:
            self._step_aside(trainer, st.NO_GPU)
            return
        i = zeus_monitor.gpu_indices[0]
        try:  # reads only
            gpu = open_gpu(i)
            self.fit.gpu_name = gpu.name()
            self.fit.constraints_mW = gpu.limit_constraints_mW()
            original_mW = gpu.limit_mW()
        except GpuError as err:  # e.g. a GPU without power management
            self._step_aside(trainer, st.NO_POWER_LIMITS, gpu=i, err=err)
            return
        self.fit.zeus_monitor, self.fit.gpu, self.fit.access = zeus_monitor, gpu, gpu.access
        self._guard.remember(gpu, original_mW)
        self.fit.original_limit_W = original_mW // 1000
        self.fit.limit_now_W, self.fit.since = self.fit.original_limit_W, time.monotonic()
        self.status = st.PROFILING
        self.fit.active = True

    def _step_aside(self, trainer: L.Trainer, code: str, **details: Any) -> None:
        """Does not apply here: fail in one line or skip (if_not_applicable), keeping the reason code."""
        self.fit.active = False
        self.fit.reason = code
        self.step_aside(st.reason_text(code, **details), trainer)

    def _take_the_card(self) -> None:
        """From here on the guard puts the card back (the limit and persistence mode it had)."""
        self._guard.install()
        self._guard.remember_persistence()
        self._guard.touched = True

    def _set_limit(self, trainer: L.Trainer, watts: int, why: str) -> None:
        """Change the card's limit (persistence mode on first, as Zeus does, so the driver keeps it)."""
        fit = self.fit
        assert fit.gpu is not None
        if self._guard.stopped:
            return
        if not fit.persistence_on:
            if self._guard.original_persistence is False:
                fit.gpu.set_persistence(True)
            fit.persistence_on = True
        fit.gpu.set_limit_mW(watts * 1000)
        fit.note_current(watts)
        fit.limit_log.append((trainer.global_step, watts))
        if trainer.is_global_zero:
            log.info("Power limit %d W (%s)", watts, why)
            for lg in trainer.loggers:  # only at changes, never per step
                lg.log_metrics({"power/limit_W": float(watts)}, step=trainer.global_step)

    def _give_up(self, trainer: L.Trainer, status: str, err: BaseException, hint: str = "") -> None:
        """Stop tuning, put back what was changed, keep training at the original limit."""
        fit = self.fit
        self._cancel_window()
        fit.profiler = None
        fit.active = False
        self.status = status
        self._put_back(status)
        if not fit.warned:
            fit.warned = True
            if status == st.NO_PERMISSION:
                route = getattr(fit.gpu, "route", "") or fit.access
                log.warning("%s", report.no_permission_line(err, str(route), fit.original_limit_W))
            else:
                log.warning("%s", report.stopped_line(err, hint, fit.original_limit_W))

    def _put_back(self, why: str) -> None:
        """The original limit back now; the rest of the fit trains at it."""
        self._guard.restore(why)
        self._guard.remove()
        self.fit.note_current(self.fit.original_limit_W)

    def _cancel_window(self) -> None:
        if self.fit.profiler is not None:
            self.fit.profiler.cancel()

    def _on_signal(self) -> None:
        """SIGTERM: change nothing more (the guard then restores the original limit)."""
        self.fit.active = False
