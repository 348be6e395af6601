"""GPU power-limit tuning with Zeus (`+optim=power`); card: docs/power.md.

Method card
-----------
What it does
    Drives Zeus's `GlobalPowerLimitOptimizer` from Lightning's hooks. During the first
    training steps it runs a few steps at each power limit the GPU allows (highest first,
    `pl_step_W` apart: `warmup_steps` to settle, then `profile_steps` measured in one Zeus
    window), picks a limit with the chosen selector (`energy`, `time`, `zeus_cost`,
    `max_slowdown`) and trains the rest of the fit at it. The card's original limit (and
    persistence mode) are put back when fit ends, on an exception, on Ctrl-C, on SIGTERM
    (SLURM's `scancel`) and at interpreter exit.
What it saves
    GPU energy: a lower limit caps the power draw while the step time grows less than the
    power falls. Zeus's published traces (V100/A40/RTX6000): ~11-17 % less energy at 4-6 %
    slowdown. Nothing on a CPU-only run.
What it costs
    Profiling time: every limit gets warm-up + profile steps, some at slow low limits
    (H100, 200-700 W every 25 W: 21 limits x 50 steps). A profile is cached per GPU model,
    net, input shape, batch size, precision and world size, so a repeat run skips it. Slower
    steps at the chosen limit when the selector trades time for energy. No accuracy cost.
When it steps aside
    No GPU under Zeus (`no_gpu`), no Zeus energy meter (`energy=estimate/off`: `no_meter`),
    limits that cannot be read (`no_power_limits`), or epochs under 3 batches
    (`epoch_too_short`): with `if_not_applicable: fail` (the default) the run stops in one line;
    with `skip` (as in `+optim=green`) it records `power/status: skipped`, `power/skipped` and
    `power/reason` and trains without it.
When not to use it
    Without permission to change limits (no SYS_ADMIN, shared clusters, most containers) it
    can only warn and train at the current limit (`no_permission`). On a shared GPU it changes
    a setting other jobs feel while it runs. Runs shorter than the profile gain nothing.
    Benchmarks and GPU checks of this project use `dry_run: true`, which changes nothing.
How it composes
    Reads time and energy through the run's single Zeus monitor (the EnergyMonitor's
    `meter.zeus_monitor`; Zeus windows are named `__GlobalPowerLimitOptimizer_<W>` and do not
    collide with the monitor's). Re-profiles when told the net changed shape
    (`on_structure_change`, after a prune by `+optim=prune`). Mixed precision changes the
    profile key, so it composes with `amp`. Under DDP each process tunes its own GPU; Zeus
    all-reduces the measurements so every rank picks the same limit, and `zeus_cost` is given
    the world size.

Short epochs: Zeus restarts a limit whose warm-up + profile is cut by the end of an epoch
(or by a validation run), so an epoch shorter than that would never finish a profile. This
callback shrinks the warm-up and profile counts to fit the epoch (logged), and the limits
are then profiled across epochs, a few per epoch.

The parts live in `wattwise.optim.power`: `status`, `plan`, `cache`, `guard` and
`zeus_adapter` (the only module that imports Zeus).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L

from wattwise.energy.monitor import find_energy_monitor
from wattwise.optim.base import EnergyMethod, StructureChange
from wattwise.optim.power import cache, plan
from wattwise.optim.power import status as st
from wattwise.optim.power.cache import net_signature
from wattwise.optim.power.guard import LimitGuard
from wattwise.optim.power.plan import fit_counts
from wattwise.optim.power.zeus_adapter import (
    SELECTORS,
    Gpu,
    GpuError,
    MeasurementRejected,
    NoPermission,
    Optimizer,
    make_selector,
    select,
)
from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)


class PowerLimitTuner(EnergyMethod):
    """Chooses the GPU's power limit with Zeus and restores the original one afterwards.

    Args (config keys `callbacks.power.*`):
        selector: `energy`, `time`, `zeus_cost` or `max_slowdown`.
        eta: `zeus_cost`'s weight on energy against time, in [0, 1].
        max_slowdown: `max_slowdown`'s largest allowed step-time factor against the
            highest limit, >= 1.
        wait_steps: steps to let pass before profiling (cudnn autotuning, compilation).
        warmup_steps: steps at each limit before measuring, >= 1.
        profile_steps: measured steps at each limit, >= 1.
        pl_step_W: watts between the limits tried.
        profile_dir: where profiles are cached (null: no cache).
        reprofile_on_change: profile again when the net changes shape (a prune).
        dry_run: change nothing; report the limits it would try and what it would choose
            from a cached profile.
        if_not_applicable: `fail` or `skip` where it cannot act (no GPU, no Zeus meter,
            unreadable limits, epochs too short); see `wattwise.optim.base`.
    """

    name: ClassVar[str] = "power"
    figure_prefix: ClassVar[str] = "power/"
    summary_keys: ClassVar[tuple[str, ...]] = ("power/status",)
    recipes: ClassVar[Mapping[str, Mapping[str, Any]]] = {"green": {}}

    def __init__(
        self,
        selector: str = "max_slowdown",
        eta: float = 0.5,
        max_slowdown: float = 1.1,
        wait_steps: int = 1,
        warmup_steps: int = 10,
        profile_steps: int = 40,
        pl_step_W: int = 25,
        profile_dir: str | None = None,
        reprofile_on_change: bool = True,
        dry_run: bool = False,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable=if_not_applicable)
        if selector not in SELECTORS:
            raise ConfigError(
                f"callbacks.power.selector must be one of {', '.join(SELECTORS)}, got {selector!r}"
            )
        if not 0.0 <= float(eta) <= 1.0:
            raise ConfigError(f"callbacks.power.eta must be in [0, 1], got {eta}")
        if float(max_slowdown) < 1.0:
            raise ConfigError(
                f"callbacks.power.max_slowdown must be >= 1.0 (a step-time factor), got {max_slowdown}"
            )
        for key, value, low in (
            ("wait_steps", wait_steps, 0),
            ("warmup_steps", warmup_steps, 1),
            ("profile_steps", profile_steps, 1),
            ("pl_step_W", pl_step_W, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"callbacks.power.{key} must be an integer >= {low}, got {value!r}")
        self.selector = selector
        self.eta = float(eta)
        self.max_slowdown = float(max_slowdown)
        self.wait_steps = wait_steps
        self.warmup_steps = warmup_steps
        self.profile_steps = profile_steps
        self.pl_step_W = pl_step_W
        self.profile_dir = Path(profile_dir) if profile_dir else None
        self.reprofile_on_change = bool(reprofile_on_change)
        # WATTWISE_POWER_DRY_RUN=1 forces a dry run whatever the config says: a switch for shared
        # clusters and for this project's tests, which must never change a real card's limit.
        self.forced_dry_run = os.environ.get("WATTWISE_POWER_DRY_RUN") == "1" and not dry_run
        self.dry_run = bool(dry_run) or self.forced_dry_run
        self._guard = LimitGuard(on_signal=self._on_signal)
        self._reset()

    def requirements(self) -> frozenset[str]:
        return frozenset({"energy"})  # it measures each limit with the energy monitor's Zeus meter

    # ---- state ----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.status = st.IDLE
        self.skipped_reason = None
        self.reason: str | None = None  # why it stepped aside: one of status.REASONS
        self.chosen_limit_W: int | None = None
        self.original_limit_W: int | None = None
        self.profile: dict[str, dict[str, float]] = {}
        self.limit_log: list[tuple[int, int]] = []  # (global step, watts) at every change
        self.plan: dict[str, Any] | None = None
        self.profile_file: Path | None = None
        self.reprofiles = 0
        self._guard.remove()
        self._guard.reset()
        self._gpu: Gpu | None = None
        self._zeus_monitor: Any = None
        self._constraints_mW: tuple[int, int] | None = None
        self._gpu_name = ""
        self._plo: Optimizer | None = None
        self._key: dict[str, Any] | None = None
        self._net_sig: str | None = None
        self._counts: tuple[int, int, int] | None = None
        self._active = False  # there is something to do in the batch hook
        self._profiling = False  # Zeus is still profiling (on_step_begin needed)
        self._reprofile_pending = False  # the net changed shape: the next batch profiles again
        self._warned = False

    @property
    def restored(self) -> bool | None:
        """True once the original limit and persistence mode are back; None if nothing was changed."""
        return self._guard.restored

    # ---- Lightning hooks ------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        monitor = find_energy_monitor(trainer)
        zeus_monitor = getattr(getattr(monitor, "meter", None), "zeus_monitor", None)
        if zeus_monitor is None:
            on_cuda = trainer.strategy.root_device.type == "cuda"
            self._step_aside(trainer, st.NO_METER if on_cuda else st.NO_GPU)
            return
        if not zeus_monitor.gpu_indices:
            self._step_aside(trainer, st.NO_GPU)
            return
        i = zeus_monitor.gpu_indices[0]
        gpu = Gpu(i)
        try:  # reads only
            self._gpu_name = gpu.name()
            self._constraints_mW = gpu.limit_constraints_mW()
            original_mW = gpu.limit_mW()
        except GpuError as err:  # e.g. a GPU without power management
            self._step_aside(trainer, st.NO_POWER_LIMITS, gpu=i, err=err)
            return
        self._zeus_monitor, self._gpu = zeus_monitor, gpu
        self._guard.remember(gpu, original_mW)
        self.original_limit_W = original_mW // 1000
        self.status = st.PROFILING
        self._active = True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._active:
            return
        if self._plo is None:
            self._start(trainer, pl_module, batch, batch_idx)
        elif self._reprofile_pending:
            self._restart(trainer, pl_module, batch, batch_idx)
        if self._profiling:
            self._step(trainer)

    def on_structure_change(
        self, trainer: L.Trainer, pl_module: L.LightningModule, change: StructureChange
    ) -> None:
        """The net changed shape (pruned): its profile no longer applies; profile it at the next batch."""
        if not self.reprofile_on_change or self._plo is None or self._guard.stopped:
            return
        self._reprofile_pending = True
        self._active = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation run inside a profile would be timed with it: cut the profile like an epoch end.
        self._epoch_end(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_end(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before Lightning's teardown puts back the signal handlers it found (ours goes with them).
        self._finish_fit("fit end")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish_fit("fit end")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._finish_fit(f"{type(exception).__name__}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._finish_fit("teardown")
            self._guard.remove()

    # ---- starting ---------------------------------------------------------------------------
    def _step_aside(self, trainer: L.Trainer, code: str, **details: Any) -> None:
        """Does not apply here: fail in one line or skip (if_not_applicable), keeping the reason code."""
        self._active = False
        self.reason = code
        self.step_aside(st.reason_text(code, **details), trainer)

    def _profile_path(self, key: dict[str, Any]) -> Path | None:
        return cache.profile_path(self.profile_dir, key)

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        assert self._constraints_mW is not None
        self._net_sig = net_signature(pl_module)
        self._key = cache.profile_key(
            gpu=self._gpu_name,
            net=self._net_sig,
            batch=batch,
            precision=str(trainer.precision),
            world_size=trainer.world_size,
            pl_step_W=self.pl_step_W,
            limits_mW=self._constraints_mW,
        )
        self.profile_file = self._profile_path(self._key)
        cached = cache.load_cached(self.profile_file)
        configured = (self.wait_steps, self.warmup_steps, self.profile_steps)
        self._counts = fit_counts(trainer.num_training_batches, *configured)
        if self._counts is None and cached is not None:  # nothing to profile: the counts do not matter
            self._counts = configured
        if self._counts is None:
            self._epoch_too_short(trainer)
            return
        if self._counts != configured:
            log.info(
                "An epoch has %d training batches, too few for %d wait + %d warm-up + %d profile steps per "
                "limit: using %d + %d + %d, so each limit's profile fits inside an epoch.",
                trainer.num_training_batches,
                *configured,
                *self._counts,
            )
        if self.dry_run:
            self._report_dry_run(trainer, cached)
            return
        self._guard.install()
        self._build(trainer, cached)

    def _epoch_too_short(self, trainer: L.Trainer) -> None:
        details = {"batches": trainer.num_training_batches}
        if not self.reprofiles:
            self._step_aside(trainer, st.EPOCH_TOO_SHORT, **details)
            return
        # Re-profiling after a prune found no cached profile for the new net: training is under way,
        # so do not stop it; put the original limit back and train on without tuning.
        self._active = False
        self.reason = st.EPOCH_TOO_SHORT
        self.status = st.SKIPPED
        self.skipped_reason = st.reason_text(st.EPOCH_TOO_SHORT, **details)
        self._guard.restore("epoch too short to profile the changed net")
        self._guard.remove()
        log.warning("power: stops tuning: %s", self.skipped_reason)

    def _report_dry_run(self, trainer: L.Trainer, cached: list[dict[str, float]] | None) -> None:
        """Say what a real run would do. Reads only: no limit, mode or clock is changed."""
        assert self._constraints_mW is not None and self._counts is not None
        self._active = False
        self.status = st.DRY_RUN
        limits = plan.limits_W(self._constraints_mW, self.pl_step_W)
        would_choose = None
        if cached is not None:
            would_choose = select(
                make_selector(self.selector, self.eta, self.max_slowdown, trainer.world_size), cached
            )
        self.plan = plan.dry_run_plan(
            gpu=self._gpu_name,
            current_limit_W=self.original_limit_W,
            limits=limits,
            counts=self._counts,
            selector=self._selector_text(),
            profile_file=str(self.profile_file) if self.profile_file else None,
            cached=cached is not None,
            would_choose_W=would_choose,
            forced_by_env=self.forced_dry_run,
        )
        if trainer.is_global_zero:
            log.info(
                "Power dry run on %s (limit now %d W): would profile %s W, %d warm-up + %d profile steps "
                "each (~%d steps), select by %s%s. Nothing was changed%s.",
                self._gpu_name,
                self.original_limit_W,
                ", ".join(map(str, limits)),
                self.plan["warmup_steps"],
                self.plan["profile_steps"],
                self.plan["profiling_steps_total"],
                self._selector_text(),
                f"; the cached profile {self.profile_file} would choose {would_choose} W" if cached else "",
                " (WATTWISE_POWER_DRY_RUN=1 is set)" if self.forced_dry_run else "",
            )

    def _build(self, trainer: L.Trainer, cached: list[dict[str, float]] | None) -> None:
        """Create Zeus's optimizer (it turns persistence mode on and sets the first limit)."""
        assert self._counts is not None
        self._guard.remember_persistence()
        self._guard.touched = True
        try:
            self._plo = Optimizer(
                self._zeus_monitor,
                make_selector(self.selector, self.eta, self.max_slowdown, trainer.world_size),
                *self._counts,
                pl_step_W=self.pl_step_W,
                profile_path=self.profile_file if cached is not None else None,
            )
        except NoPermission as err:
            self._give_up(trainer, st.NO_PERMISSION, err)
            return
        except GpuError as err:  # e.g. setting limits not supported on this GPU
            self._give_up(trainer, st.ERROR, err)
            return
        self._profiling = True
        self._note_limit(trainer, "from cached profile" if cached is not None else "profiling starts")
        if self._plo.done:
            self._done(trainer, from_cache=True)

    def _restart(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        """The net changed shape (pruned): profile again under the new key (or use its cache)."""
        log.info("The net changed shape: profiling power limits again.")
        self._cancel_window()
        self._plo = None
        self._profiling = False
        self._reprofile_pending = False
        self.reprofiles += 1
        self.chosen_limit_W = None
        self.profile = {}
        self.status = st.PROFILING
        self._start(trainer, pl_module, batch, batch_idx)

    # ---- stepping ---------------------------------------------------------------------------
    def _step(self, trainer: L.Trainer) -> None:
        assert self._plo is not None
        before = self._plo.current_limit_mW
        try:
            self._plo.on_step_begin()
        except NoPermission as err:
            self._give_up(trainer, st.NO_PERMISSION, err)
            return
        except GpuError as err:
            self._give_up(trainer, st.ERROR, err)
            return
        except MeasurementRejected as err:  # a profile window that read 0 J
            self._give_up(trainer, st.ERROR, err, hint=st.ZERO_ENERGY_HINT)
            return
        if self._guard.stopped:  # SIGTERM arrived inside Zeus's call: make sure its last change is undone
            self._guard.restore("SIGTERM")
            return
        done = self._plo.done
        if self._plo.current_limit_mW != before:
            self._note_limit(trainer, "chosen" if done else "profiling")
        if done:
            self._done(trainer, from_cache=False)

    def _epoch_end(self, trainer: L.Trainer) -> None:
        if not self._profiling or self._plo is None:
            return
        before = self._plo.current_limit_mW
        try:
            self._plo.on_epoch_end()
        except MeasurementRejected as err:  # as in _step: a cut profile window that read 0 J
            self._give_up(trainer, st.ERROR, err, hint=st.ZERO_ENERGY_HINT)
            return
        if self._plo.current_limit_mW != before:
            self._note_limit(trainer, "profile cut by epoch end/validation; resumes next epoch")

    def _done(self, trainer: L.Trainer, from_cache: bool) -> None:
        assert self._plo is not None
        self._profiling = False
        self._active = False  # nothing per batch now; on_structure_change wakes it for a re-profile
        self.chosen_limit_W = self._plo.optimal_limit_mW // 1000
        measurements = self._plo.measurements()
        self.profile = {
            str(m["power_limit"]): {"time_s": float(m["time"]), "energy_J": float(m["energy"])}
            for m in measurements
        }
        self.status = st.CACHED if from_cache else st.TUNED
        if not from_cache and trainer.is_global_zero:
            cache.save_profile(self.profile_file, self._key, measurements)
        if trainer.is_global_zero:
            table = "; ".join(
                f"{w} W: {m['time_s']:.3g} s, {m['energy_J']:.4g} J" for w, m in self.profile.items()
            )
            log.info(
                "Power limit %d W chosen by %s%s (original %d W, restored at fit end). Profile: %s",
                self.chosen_limit_W,
                self._selector_text(),
                f" from the cached profile {self.profile_file}" if from_cache else "",
                self.original_limit_W,
                table,
            )

    def _note_limit(self, trainer: L.Trainer, why: str) -> None:
        assert self._plo is not None
        watts = self._plo.current_limit_mW // 1000
        self.limit_log.append((trainer.global_step, watts))
        if trainer.is_global_zero:
            log.info("Power limit %d W (%s)", watts, why)
            for lg in trainer.loggers:  # only at changes, never per step
                lg.log_metrics({"power/limit_W": float(watts)}, step=trainer.global_step)

    def _give_up(self, trainer: L.Trainer, status: str, err: BaseException, hint: str = "") -> None:
        """Stop tuning, put back what was changed, keep training at the original limit."""
        self._cancel_window()
        self._plo = None
        self._profiling = False
        self._active = False
        self.status = status
        self._guard.restore(status)
        self._guard.remove()
        if not self._warned:
            self._warned = True
            if status == st.NO_PERMISSION:
                log.warning(
                    "No permission to change the GPU's power limit (%s). Training goes on at %d W; "
                    "power/status=no_permission. Grant SYS_ADMIN or run Zeus's daemon (zeusd) to tune.",
                    err,
                    self.original_limit_W,
                )
            else:
                log.warning(
                    "Power-limit tuning stopped: %s; training goes on at %d W, power/status=error.",
                    hint or f"the GPU refused a power-limit change ({err})",
                    self.original_limit_W,
                )

    def _cancel_window(self) -> None:
        if self._plo is not None:
            self._plo.cancel_window()

    # ---- restoring ----------------------------------------------------------------------------
    def _on_signal(self) -> None:
        """SIGTERM: change nothing more (the guard then restores the original limit)."""
        self._profiling = False
        self._active = False

    def _finish_fit(self, why: str) -> None:
        self._cancel_window()
        if self._profiling and self._plo is not None:
            self.status = st.INCOMPLETE
        self._profiling = False
        self._active = False
        self._guard.restore(why)
        self._guard.remove()

    # ---- results ----------------------------------------------------------------------------
    def _selector_text(self) -> str:
        if self.selector == "zeus_cost":
            return f"zeus_cost(eta={self.eta})"
        if self.selector == "max_slowdown":
            return f"max_slowdown({self.max_slowdown})"
        return self.selector

    def summary_figures(self) -> dict[str, Any]:
        """The base's `power/status` (and `power/skipped`), `power/reason` when it stepped aside, the rest."""
        out = super().summary_figures()
        if self.reason is not None:
            out["power/reason"] = self.reason
        return out

    def method_figures(self) -> dict[str, Any]:
        """`power/*` figures for summary.json: limits, the profile, the dry-run plan."""
        out: dict[str, Any] = {}
        if self.original_limit_W is None:
            return out
        trained_at = self.chosen_limit_W if self.chosen_limit_W is not None else self.original_limit_W
        out["power/limit_W"] = trained_at
        out["power/original_limit_W"] = self.original_limit_W
        out["power/selector"] = self._selector_text()
        if self.restored is not None:
            out["power/restored"] = self.restored
        if self.profile:
            out["power/profile"] = self.profile
        if self.limit_log:
            out["power/limit_log"] = [list(x) for x in self.limit_log]
        if self.profile_file is not None:
            out["power/profile_file"] = str(self.profile_file)
        if self.reprofiles:
            out["power/reprofiles"] = self.reprofiles
        if self.plan is not None:
            out["power/dry_run"] = self.plan
        return out

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        if rows or summary.get("power/status") is None:
            return rows
        limit = summary.get("power/limit_W")
        return [("power limit (power)", f"{summary['power/status']}" + (f", {limit:g} W" if limit else ""))]


__all__: Sequence[str] = ["PowerLimitTuner", "fit_counts", "make_selector", "net_signature"]
