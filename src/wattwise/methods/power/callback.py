"""GPU power-limit tuning with Zeus (`+optim=power`); card: the card (methods/power/README.md).

Method card
-----------
What it does
    During the first training steps it runs a few steps at each power limit the card supports
    (its minimum, every `pl_step_W` above it, and its maximum; highest first): `warmup_steps`
    to settle, then `profile_steps` measured in `blocks` windows of the run's Zeus monitor. Zeus's
    selector (`energy`, `time`, `zeus_cost`, `max_slowdown`) picks from the per-batch means;
    limits the measured noise cannot tell from the pick are measured once more (`confirm`), and
    where they still cannot be told apart the safer (higher) limit wins. The rest of the fit
    trains at the choice. The card's original limit (and persistence mode) are put back when fit
    ends, on an exception, on Ctrl-C, on SIGTERM (SLURM's `scancel`) and at interpreter exit.
What it saves
    GPU energy: a lower limit caps the power draw while the step time grows less than the
    power falls. Zeus's published traces (V100/A40/RTX6000): ~11-17 % less energy at 4-6 %
    slowdown. Nothing on a CPU-only run.
What it costs
    Profiling time: every limit gets warm-up + profile steps, some at slow low limits, and close
    candidates get them twice. A profile is cached per GPU model, net, input shape, batch size,
    precision and world size, so a repeat run skips it. Slower steps at the chosen limit when
    the selector trades time for energy. No accuracy cost.
When it steps aside
    No GPU under Zeus (`no_gpu`), no Zeus energy meter (`energy=estimate/off`: `no_meter`),
    limits that cannot be read (`no_power_limits`), or epochs (or stretches between validation
    runs) under 2 batches (`epoch_too_short`): with `if_not_applicable: fail` (the default) the
    run stops in one line; with `skip` (as in `+optim=green`) it records `power/status: skipped`,
    `power/skipped` and `power/reason` and trains without it.
When not to use it
    Without zeusd and without permission to change limits (no SYS_ADMIN: shared clusters, most
    containers) it can only warn once and train at the current limit (`no_permission`). On a
    shared GPU it changes a setting other jobs feel while it runs. Runs shorter than the
    profile gain nothing. Benchmarks and GPU checks of this project use `dry_run: true`.
How it composes
    Reads time and energy through the run's single Zeus monitor (the EnergyMonitor's
    `meter.zeus_monitor`; windows are named `__wattwise_power_<W>W_<n>` and do not collide
    with the monitor's). Validation runs and epoch ends pause the profile (validation is never
    measured). Re-profiles when told the net changed shape (`on_structure_change`, after a
    prune by `+optim=prune`). Mixed precision changes the profile key, so it composes with
    `amp`. Under DDP each rank measures its own card over the same batches; the ranks' figures
    are pooled (energy summed, time the slowest), rank 0 decides, the decision is broadcast,
    every rank sets and restores its own card, and `zeus_cost` is given the world size. With
    `+optim=batch_size` it profiles at the size the finder chose (`runs_after`); with
    `callbacks.batch_size.joint_power: true` the finder searches size and limit together on this
    tuner's grid through `lend_limits` (the card, via this tuner's handle and guard) and hands the
    choice back with `adopt_limit`: this tuner then trains at it without profiling
    (`power/source`) and still restores the original limit (`return_limits` when it chose none).

Its parts live beside it in this folder: `status`, `plan`, `profiler`, `choose`, `guard`; what it
shares with the batch-size finder is in methods/shared: `collective`, `profile_cache`,
`power_access` (the `power_limits` service it provides) and `zeus_adapter` (the only module that
imports Zeus).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L

from wattwise.methods.base import EnergyMethod, StructureChange
from wattwise.methods.power import choose, plan
from wattwise.methods.power import status as st
from wattwise.methods.power.guard import LimitGuard
from wattwise.methods.power.profiler import Decision, Profiler, Sample, block_size
from wattwise.methods.shared import collective
from wattwise.methods.shared import profile_cache as cache
from wattwise.methods.shared.power_access import JOINT_SOURCE, LimitAccess
from wattwise.methods.shared.profile_cache import net_signature
from wattwise.methods.shared.zeus_adapter import (
    SELECTORS,
    GpuError,
    MeasurementRejected,
    NoPermission,
    ZeusMeter,
    make_selector,
    open_gpu,
)
from wattwise.utils.errors import ConfigError, require_int

log = logging.getLogger(__name__)


class Power(EnergyMethod):
    """Chooses the GPU's power limit with Zeus's selectors and restores the original one afterwards.

    Args (config keys `callbacks.power.*`):
        selector: `energy`, `time`, `zeus_cost` or `max_slowdown`.
        eta: `zeus_cost`'s weight on energy against time, in [0, 1].
        max_slowdown: `max_slowdown`'s largest allowed step-time factor against the
            highest limit, >= 1.
        wait_steps: steps to let pass before profiling (cudnn autotuning, compilation).
        warmup_steps: steps at each limit before measuring, >= 1.
        profile_steps: measured steps at each limit, >= 1.
        blocks: measuring windows per limit (their spread is the noise), >= 1.
        confirm: measure the limits the noise cannot tell from the pick once more.
        pl_step_W: watts between the limits tried (from the card's minimum up, plus its maximum).
        profile_dir: where profiles are cached (null: no cache).
        reprofile_on_change: profile again when the net changes shape (a prune).
        dry_run: change nothing; report the limits it would try and what it would choose
            from a cached profile.
        if_not_applicable: `fail` or `skip` where it cannot act (no GPU, no Zeus meter,
            unreadable limits, epochs too short); see `wattwise.methods.base`.
    """

    name: ClassVar[str] = "power"
    figure_prefix: ClassVar[str] = "power/"
    summary_keys: ClassVar[tuple[str, ...]] = ("power/status",)
    provides: ClassVar[tuple[str, ...]] = ("power_limits",)  # lent to batch_size's joint search
    runs_after: ClassVar[tuple[str, ...]] = ("batch_size",)  # profile at the batch size it chose
    recipes: ClassVar[Mapping[str, Mapping[str, Any]]] = {"green": {}}

    def __init__(
        self,
        selector: str = "max_slowdown",
        eta: float = 0.5,
        max_slowdown: float = 1.1,
        wait_steps: int = 1,
        warmup_steps: int = 10,
        profile_steps: int = 40,
        blocks: int = 4,
        confirm: bool = True,
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
            ("blocks", blocks, 1),
            ("pl_step_W", pl_step_W, 1),
        ):
            require_int(f"callbacks.power.{key}", value, low)
        self.selector = selector
        self.eta = float(eta)
        self.max_slowdown = float(max_slowdown)
        self.wait_steps = wait_steps
        self.warmup_steps = warmup_steps
        self.profile_steps = profile_steps
        self.blocks = blocks
        self.confirm = bool(confirm)
        self.pl_step_W = pl_step_W
        self.profile_dir = Path(profile_dir) if profile_dir else None
        self.reprofile_on_change = bool(reprofile_on_change)
        # WATTWISE_POWER_DRY_RUN=1 forces a dry run whatever the config says: a switch for shared
        # clusters and for this project's tests, which must never change a real card's limit.
        self.forced_dry_run = os.environ.get("WATTWISE_POWER_DRY_RUN") == "1" and not dry_run
        self.dry_run = bool(dry_run) or self.forced_dry_run
        self._guard = LimitGuard(on_signal=self._on_signal)
        self._opened_early = False  # lend_limits opened the card before this fit's on_fit_start
        self._fit_open = False  # the card was opened for the fit under way (until teardown)
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
        self.access: str | None = None  # how limits are changed: zeusd or nvml
        self.profile: dict[str, dict[str, float]] = {}
        self.confirmed_W: list[int] = []  # close candidates measured a second time
        self.limit_log: list[tuple[int, int]] = []  # (global step, watts) at every change
        self.plan: dict[str, Any] | None = None
        self.profile_file: Path | None = None
        self.reprofiles = 0
        self._guard.remove()
        self._guard.reset()
        self._gpu: Any = None
        self._zeus_monitor: Any = None
        self._constraints_mW: tuple[int, int] | None = None
        self._gpu_name = ""
        self._profiler: Profiler | None = None
        self._limits: list[int] = []
        self._key: dict[str, Any] | None = None
        self._net_sig: str | None = None
        self._samples: list[Sample] = []  # the job's samples (pooled over ranks) behind the choice
        self._world_size = 1
        self._active = False  # there is something to do in the batch hook
        self._reprofile_pending = False  # the net changed shape: the next batch profiles again
        self._warned = False
        self._persistence_on = False
        self._batches_at: dict[int, int] = {}  # training batches run at each limit
        self._seconds_at: dict[int, float] = {}
        self._limit_now_W: int | None = None
        self._since = 0.0
        self.source: str | None = None  # who chose the limit when not this tuner (the joint search)
        self._adopted_selector: str | None = None
        self._lent = False  # the batch-size finder holds a LimitAccess

    @property
    def restored(self) -> bool | None:
        """True once the original limit and persistence mode are back; None if nothing was changed."""
        return self._guard.restored

    # ---- Lightning hooks ------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ensure_services(trainer)
        if self._opened_early:  # the batch-size finder borrowed the card this fit: it is open already
            self._opened_early = False
            return
        self._reset()
        self._fit_open = True
        self._open(trainer)

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
            self._gpu_name = gpu.name()
            self._constraints_mW = gpu.limit_constraints_mW()
            original_mW = gpu.limit_mW()
        except GpuError as err:  # e.g. a GPU without power management
            self._step_aside(trainer, st.NO_POWER_LIMITS, gpu=i, err=err)
            return
        self._zeus_monitor, self._gpu, self.access = zeus_monitor, gpu, gpu.access
        self._guard.remember(gpu, original_mW)
        self.original_limit_W = original_mW // 1000
        self._limit_now_W, self._since = self.original_limit_W, time.monotonic()
        self.status = st.PROFILING
        self._active = True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._active:
            if self._reprofile_pending:
                self._restart(trainer, pl_module, batch)
            elif self._key is None:  # the first training batch
                self._start(trainer, pl_module, batch)
            if self._active and self._profiler is not None and not self._profiler.done:
                self._step(trainer)
        if self._limit_now_W is not None:  # this batch runs at the limit now in force
            self._batches_at[self._limit_now_W] = self._batches_at.get(self._limit_now_W, 0) + 1

    def on_structure_change(
        self, trainer: L.Trainer, pl_module: L.LightningModule, change: StructureChange
    ) -> None:
        """The net changed shape (pruned): its profile no longer applies; profile it at the next batch."""
        started = self._profiler is not None or self.status == st.CACHED or self.source is not None
        if not self.reprofile_on_change or not started or self._guard.stopped:
            return
        self._reprofile_pending = True
        self._active = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()  # validation is not measured: the profile pauses and resumes after it

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before Lightning's teardown puts back the signal handlers it found (ours goes with them).
        self._finish_fit("fit end")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish_fit("fit end")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._finish_fit(f"{type(exception).__name__}")
        self._opened_early = self._fit_open = False

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._finish_fit("teardown")
            self._guard.remove()
            self._opened_early = self._fit_open = False

    # ---- the joint search with the batch-size finder ------------------------------------------
    def lend_limits(self, trainer: L.Trainer) -> LimitAccess | str:
        """The grid and the card for the finder's joint search, or why not (it then searches alone).

        Called from the finder's on_fit_start, usually before this tuner's: the card is opened here
        (once: on_fit_start then does not open it again). Refused when the tuner stepped aside, in a
        dry run, or without permission: a first change is tried (nothing stays changed when refused;
        the tuner then warns once, as it would have at its first change, and trains at the original).
        """
        if not self._fit_open:  # this fit's on_fit_start has not run yet
            self._reset()
            self._fit_open = self._opened_early = True
            self._open(trainer)  # may step aside (fail: the tuner's own one line)
        if not self.active or not self._active or self._gpu is None or self._constraints_mW is None:
            return f"the power tuner is not tuning: {self.skipped_reason or self.status}"
        if self.dry_run:
            why = "WATTWISE_POWER_DRY_RUN=1" if self.forced_dry_run else "callbacks.power.dry_run=true"
            return f"the power tuner is in a dry run ({why}): no limit may change"
        self._limits = plan.limits_W(self._constraints_mW, self.pl_step_W)
        assert self.original_limit_W is not None
        probe = next((w for w in self._limits if w != self.original_limit_W), self.original_limit_W)
        self._guard.install()
        self._guard.remember_persistence()
        self._guard.touched = True
        try:
            self._set_limit(trainer, probe, f"{JOINT_SOURCE}: first limit")
        except GpuError as err:
            self._give_up(trainer, st.NO_PERMISSION if isinstance(err, NoPermission) else st.ERROR, err)
            return f"the power tuner cannot change the limit ({self.status}: {err})"
        self._lent, self._active = True, False  # the finder measures the limits, not this tuner
        return LimitAccess(
            limits_W=tuple(self._limits),
            warmup_steps=self.warmup_steps,
            max_limit_W=self._constraints_mW[1] // 1000,
            original_limit_W=self.original_limit_W,
            set_limit=lambda watts: self._set_limit(trainer, watts, JOINT_SOURCE),
        )

    def adopt_limit(
        self,
        trainer: L.Trainer,
        limit_W: int,
        source: str = JOINT_SOURCE,
        selector: str = "",
        cached: bool = False,
    ) -> None:
        """Train at `limit_W`, chosen by `source` (the finder's joint search): no profiling of its own.

        The figures say so (`power/source`); the guard still restores the original limit at fit end.
        """
        if not self._lent:
            raise RuntimeError("adopt_limit needs lend_limits first")
        self._set_limit(trainer, int(limit_W), source)
        self._lent = False
        self.chosen_limit_W = int(limit_W)
        self.source = source
        self._adopted_selector = selector or None
        self.status = st.CACHED if cached else st.TUNED
        if trainer.is_global_zero:
            log.info(
                "Power limit %d W chosen by the %s%s (original %d W, restored at fit end); not profiled "
                "here.",
                limit_W,
                source,
                f" ({selector})" if selector else "",
                self.original_limit_W,
            )

    def return_limits(self, trainer: L.Trainer, why: str) -> None:
        """The finder chose no limit: the original back, and this tuner profiles on its own as usual."""
        if not self._lent:
            return
        self._lent = False
        self._guard.restore(why)
        self._guard.remove()
        self._note_current(self.original_limit_W)
        gpu, original_mW = self._guard.gpu, self._guard.original_mW
        self._guard.reset()
        if gpu is not None and original_mW is not None:
            self._guard.remember(gpu, original_mW)
        self._persistence_on = False
        self._limits = []
        self._active = True

    # ---- starting ---------------------------------------------------------------------------
    def _step_aside(self, trainer: L.Trainer, code: str, **details: Any) -> None:
        """Does not apply here: fail in one line or skip (if_not_applicable), keeping the reason code."""
        self._active = False
        self.reason = code
        self.step_aside(st.reason_text(code, **details), trainer)

    def _profile_path(self, key: dict[str, Any]) -> Path | None:
        return cache.profile_path(self.profile_dir, key)

    def _rule(self) -> choose.Rule:
        return choose.Rule(self.selector, self.eta, self.max_slowdown, self._world_size)

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        assert self._constraints_mW is not None
        self._world_size = trainer.world_size
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
        # rank 0's cache and grid for every rank, so all change limits together (the cards are alike
        # under DDP, but a node without rank 0's cache file must not profile alone)
        cached = collective.decide_on_rank_zero(lambda: cache.load_cached(self.profile_file))
        self._limits = collective.decide_on_rank_zero(
            lambda: plan.limits_W(self._constraints_mW, self.pl_step_W)
        )
        val_every = getattr(trainer, "val_check_batch", None)
        segment = plan.segment_batches(trainer.num_training_batches, val_every)
        if cached is None and segment < 2:
            self._epoch_too_short(trainer, segment)
            return
        if self.dry_run:
            self._report_dry_run(trainer, cached)
            return
        self._guard.install()
        self._guard.remember_persistence()
        self._guard.touched = True
        if cached is not None:
            self._choose_from_cache(trainer, cached)
            return
        accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
        self._profiler = Profiler(
            limits_W=list(self._limits),
            wait=self.wait_steps,
            warmup=self.warmup_steps,
            profile=self.profile_steps,
            block=block_size(self.profile_steps, self.blocks, accumulate),
            set_limit=lambda watts: self._set_limit(trainer, watts, "profiling"),
            meter=ZeusMeter(self._zeus_monitor),
            decide=self._decide,
        )

    def _epoch_too_short(self, trainer: L.Trainer, segment: float) -> None:
        details = {"batches": int(segment)}
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
        self._note_current(self.original_limit_W)
        log.warning("power: stops tuning: %s", self.skipped_reason)

    def _report_dry_run(self, trainer: L.Trainer, cached: list[dict[str, float]] | None) -> None:
        """Say what a real run would do. Reads only: no limit, mode or clock is changed."""
        self._active = False
        self.status = st.DRY_RUN
        counts = (self.wait_steps, self.warmup_steps, self.profile_steps)
        would_choose = None
        if cached is not None:
            would_choose = choose.decide(cache_samples(cached), True, self._rule(), confirm=False).chosen_W
        self.plan = plan.dry_run_plan(
            gpu=self._gpu_name,
            access=str(self.access),
            current_limit_W=self.original_limit_W,
            limits=self._limits,
            counts=counts,
            selector=self._selector_text(),
            profile_file=str(self.profile_file) if self.profile_file else None,
            cached=cached is not None,
            would_choose_W=would_choose,
            forced_by_env=self.forced_dry_run,
        )
        if trainer.is_global_zero:
            log.info(
                "Power dry run on %s (limit now %d W, changes via %s): would profile %s W, %d warm-up + %d "
                "profile steps each (~%d steps), select by %s%s. Nothing was changed%s.",
                self._gpu_name,
                self.original_limit_W,
                self.access,
                ", ".join(map(str, self._limits)),
                self.warmup_steps,
                self.profile_steps,
                self.plan["profiling_steps_total"],
                self._selector_text(),
                f"; the cached profile {self.profile_file} would choose {would_choose} W" if cached else "",
                " (WATTWISE_POWER_DRY_RUN=1 is set)" if self.forced_dry_run else "",
            )

    def _choose_from_cache(self, trainer: L.Trainer, cached: list[dict[str, float]]) -> None:
        samples = cache_samples(cached)
        decision = collective.decide_on_rank_zero(
            lambda: choose.decide(samples, True, self._rule(), confirm=False)
        )
        assert decision.chosen_W is not None
        try:
            self._set_limit(trainer, decision.chosen_W, "from cached profile")
        except GpuError as err:
            self._give_up(trainer, st.NO_PERMISSION if isinstance(err, NoPermission) else st.ERROR, err)
            return
        self._done(trainer, decision.chosen_W, samples, from_cache=True)

    def _restart(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        """The net changed shape (pruned): profile again under the new key (or use its cache)."""
        log.info("The net changed shape: profiling power limits again.")
        self._cancel_window()
        self._profiler = None
        self._reprofile_pending = False
        self.reprofiles += 1
        self.chosen_limit_W = None
        self.source = self._adopted_selector = None
        self.profile = {}
        self.confirmed_W = []
        self.status = st.PROFILING
        self._start(trainer, pl_module, batch)

    # ---- stepping ---------------------------------------------------------------------------
    def _set_limit(self, trainer: L.Trainer, watts: int, why: str) -> None:
        """Change the card's limit (persistence mode on first, as Zeus does, so the driver keeps it)."""
        assert self._gpu is not None
        if self._guard.stopped:
            return
        if not self._persistence_on:
            if self._guard.original_persistence is False:
                self._gpu.set_persistence(True)
            self._persistence_on = True
        self._gpu.set_limit_mW(watts * 1000)
        self._note_current(watts)
        self.limit_log.append((trainer.global_step, watts))
        if trainer.is_global_zero:
            log.info("Power limit %d W (%s)", watts, why)
            for lg in trainer.loggers:  # only at changes, never per step
                lg.log_metrics({"power/limit_W": float(watts)}, step=trainer.global_step)

    def _note_current(self, watts: int | None) -> None:
        """Book the wall time since the last change to the limit that was in force."""
        now = time.monotonic()
        if self._limit_now_W is not None:
            spent = now - self._since
            self._seconds_at[self._limit_now_W] = self._seconds_at.get(self._limit_now_W, 0.0) + spent
        self._limit_now_W, self._since = watts, now

    def _decide(self, samples: list[Sample], final: bool) -> Decision:
        """The profiler's round is measured: pool the ranks' samples, rank 0 decides, all ranks follow."""
        pooled = collective.pool_samples(samples)
        self._samples = pooled

        def make() -> Decision:
            try:
                return choose.decide(pooled, final, self._rule(), self.confirm)
            except MeasurementRejected as err:
                return Decision(error=str(err))

        decision = collective.decide_on_rank_zero(make)
        if decision.error is not None:
            raise MeasurementRejected(decision.error)
        if decision.confirm_W and _is_rank_zero():
            log.info(
                "Power limits %s W are within the noise of each other: measuring them again.",
                ", ".join(map(str, decision.confirm_W)),
            )
        return decision

    def _step(self, trainer: L.Trainer) -> None:
        assert self._profiler is not None
        try:
            self._profiler.before_batch()
        except NoPermission as err:
            self._give_up(trainer, st.NO_PERMISSION, err)
            return
        except GpuError as err:
            self._give_up(trainer, st.ERROR, err)
            return
        except MeasurementRejected as err:  # a limit whose windows read 0 J
            self._give_up(trainer, st.ERROR, err, hint=st.ZERO_ENERGY_HINT)
            return
        if self._guard.stopped:  # SIGTERM arrived inside a change: make sure it is undone
            self._guard.restore("SIGTERM")
            return
        if self._profiler.done:
            assert self._profiler.chosen_W is not None
            self.confirmed_W = list(self._profiler.confirmed_W)
            self._done(trainer, self._profiler.chosen_W, self._samples, from_cache=False)

    def _pause(self) -> None:
        if self._profiler is not None and self._active:
            self._profiler.pause()

    def _done(self, trainer: L.Trainer, chosen_W: int, samples: list[Sample], from_cache: bool) -> None:
        self._active = False  # nothing per batch now; on_structure_change wakes it for a re-profile
        self.chosen_limit_W = chosen_W
        self.profile = {str(w): s.as_record() for w, s in choose.summarize(samples).items()}
        self.status = st.CACHED if from_cache else st.TUNED
        if not from_cache and trainer.is_global_zero:
            cache.save_profile(self.profile_file, self._key, [sample_record(s) for s in samples])
        if trainer.is_global_zero:
            table = "; ".join(
                f"{w} W: {m['step_time_s']:.3g} s, {m['step_energy_J']:.4g} J per batch "
                f"(+-{100 * m['energy_rsd']:.1f}%)"
                for w, m in self.profile.items()
            )
            log.info(
                "Power limit %d W chosen by %s%s (original %d W, restored at fit end). Profile: %s",
                chosen_W,
                self._selector_text(),
                f" from the cached profile {self.profile_file}" if from_cache else "",
                self.original_limit_W,
                table,
            )

    def _give_up(self, trainer: L.Trainer, status: str, err: BaseException, hint: str = "") -> None:
        """Stop tuning, put back what was changed, keep training at the original limit."""
        self._cancel_window()
        self._profiler = None
        self._active = False
        self.status = status
        self._guard.restore(status)
        self._guard.remove()
        self._note_current(self.original_limit_W)
        if not self._warned:
            self._warned = True
            if status == st.NO_PERMISSION:
                log.warning(
                    "No permission to change the GPU's power limit (%s; %s). Training goes on at %d W; "
                    "power/status=no_permission. Grant SYS_ADMIN or run Zeus's daemon (zeusd) to tune.",
                    err,
                    getattr(self._gpu, "route", "") or self.access,
                    self.original_limit_W,
                )
            else:
                log.warning(
                    "Power-limit tuning stopped: %s; training goes on at %d W, power/status=error.",
                    hint or f"the GPU refused a power-limit change ({err})",
                    self.original_limit_W,
                )

    def _cancel_window(self) -> None:
        if self._profiler is not None:
            self._profiler.cancel()

    # ---- restoring ----------------------------------------------------------------------------
    def _on_signal(self) -> None:
        """SIGTERM: change nothing more (the guard then restores the original limit)."""
        self._active = False

    def _finish_fit(self, why: str) -> None:
        self._cancel_window()
        unfinished = self._profiler is not None and not self._profiler.done and self.status == st.PROFILING
        if unfinished:
            self.status = st.INCOMPLETE
        self._active = False
        self._guard.restore(why)
        self._guard.remove()
        if self._limit_now_W is not None:
            self._note_current(None)
        if unfinished and not self._warned:
            self._warned = True
            assert self._profiler is not None
            measured = len({s.limit_W for s in self._profiler.samples})
            log.warning(
                "Power-limit tuning did not finish: fit ended after %d of %d limits were measured, so no "
                "limit was chosen (power/status=incomplete); the run trained mostly at %s W (batches per "
                "limit: %s). Give it more training batches or fewer/shorter profiles.",
                measured,
                len(self._limits),
                self._trained_at_W(),
                self._batches_at,
            )

    # ---- results ----------------------------------------------------------------------------
    def _trained_at_W(self) -> int | None:
        """The limit the run trained at: the choice, else the one most training batches ran at."""
        if self.chosen_limit_W is not None:
            return self.chosen_limit_W
        if self._batches_at:
            return max(self._batches_at, key=lambda w: (self._batches_at[w], w))
        return self.original_limit_W

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
        out["power/limit_W"] = self._trained_at_W()
        out["power/original_limit_W"] = self.original_limit_W
        out["power/selector"] = self._adopted_selector or self._selector_text()
        out["power/access"] = self.access
        if self.source is not None:
            out["power/source"] = self.source
        if self.restored is not None:
            out["power/restored"] = self.restored
        if self._limits:
            out["power/limits_tried_W"] = list(self._limits)
        if self.profile:
            out["power/profile"] = self.profile
        if self.confirmed_W:
            out["power/confirmed_W"] = self.confirmed_W
        if self._batches_at:
            out["power/batches_at_W"] = {str(w): n for w, n in sorted(self._batches_at.items(), reverse=True)}
        if self._seconds_at:
            out["power/seconds_at_W"] = {
                str(w): round(s, 3) for w, s in sorted(self._seconds_at.items(), reverse=True)
            }
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
        source = f" (by the {summary['power/source']})" if summary.get("power/source") else ""
        text = f"{summary['power/status']}" + (f", {limit:g} W" if limit else "") + source
        return [("power limit (power)", text)]


def sample_record(sample: Sample) -> dict[str, float]:
    """A measuring window as the cache stores it."""
    return {
        "power_limit": sample.limit_W,
        "round": sample.round,
        "steps": sample.steps,
        "energy": sample.energy_J,
        "time": sample.time_s,
    }


def cache_samples(records: Sequence[Mapping[str, Any]]) -> list[Sample]:
    """The cache's records as samples."""
    return [
        Sample(
            limit_W=int(r["power_limit"]),
            round=int(r.get("round", 1)),
            steps=int(r["steps"]),
            energy_J=float(r["energy"]),
            time_s=float(r["time"]),
        )
        for r in records
    ]


def _is_rank_zero() -> bool:
    """Rank 0 (or no process group): the rank that logs."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


__all__: Sequence[str] = ["Power", "make_selector", "net_signature"]
