"""GPU power-limit tuning with Zeus (`+optim=power`); the card is methods/power/README.md.

During the first training steps it runs a few steps at each power limit the card supports, picks one
with Zeus's selector (close candidates measured twice; within the noise, the higher limit), trains on
at it, and puts the card's original limit back when fit ends, on an exception, Ctrl-C, SIGTERM and at
interpreter exit. Where it cannot act (no GPU, no Zeus meter, unreadable limits, epochs too short) it
steps aside (`if_not_applicable`); without permission it warns once and trains at the current limit.

This module is the callback: it gathers what Lightning and the card tell it and acts. Its parts live
beside it: `settings` (the config keys), `walk` (the profiling schedule as a state machine) and
`profiler` (which carries it out), `choose` (the decision), `plan` (the grid, the dry-run plan),
`fit` (the per-fit state), `report` (figures and log lines), `guard` (restoring the card), `status`;
what it shares with the batch-size finder is in methods/shared: `collective`, `profile_cache`,
`power_access` (the `power_limits` service it provides) and `zeus_adapter` (the only module that
imports Zeus).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L

from wattwise.methods.base import StructureChange
from wattwise.methods.power import choose, plan, report
from wattwise.methods.power import profile_cache as cache
from wattwise.methods.power import status as st
from wattwise.methods.power.guard import LimitGuard
from wattwise.methods.power.joint import JointSearch
from wattwise.methods.power.profiler import (
    Decision,
    Profiler,
    Sample,
    block_size,
    cache_samples,
    sample_record,
)
from wattwise.methods.power.settings import KEY, PowerSettings
from wattwise.methods.shared import collective
from wattwise.methods.shared.profile_cache import net_signature
from wattwise.methods.shared.zeus_adapter import (
    GpuError,
    MeasurementRejected,
    NoPermission,
    ZeusMeter,
    make_selector,
)

log = logging.getLogger(__name__)


class Power(JointSearch):
    """Chooses the GPU's power limit with Zeus's selectors and restores the original one afterwards.

    Args: the `callbacks.power.*` keys, one per `PowerSettings` field (settings.py says what each
    does; conf/optim/power.yaml gives them with their defaults), and `if_not_applicable`: `fail` or
    `skip` where it cannot act (no GPU, no Zeus meter, unreadable limits, epochs too short).
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
        kwargs = {k: v for k, v in locals().items() if k in PowerSettings.__dataclass_fields__}
        self.settings = PowerSettings.build(KEY, **kwargs)
        self.profile_dir = Path(self.settings.profile_dir) if self.settings.profile_dir else None
        # WATTWISE_POWER_DRY_RUN=1 forces a dry run whatever the config says: a switch for shared
        # clusters and for this project's tests, which must never change a real card's limit.
        self.forced_dry_run = os.environ.get("WATTWISE_POWER_DRY_RUN") == "1" and not dry_run
        self.dry_run = self.settings.dry_run or self.forced_dry_run
        self._guard = LimitGuard(on_signal=self._on_signal)
        self._opened_early = False  # lend_limits opened the card before this fit's on_fit_start
        self._fit_open = False  # the card was opened for the fit under way (until teardown)
        self._reset()

    # ---- Lightning hooks ------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ensure_services(trainer)
        if self._opened_early:  # the batch-size finder borrowed the card this fit: it is open already
            self._opened_early = False
            return
        self._reset()
        self._fit_open = True
        self._open(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.fit.active:
            if self.fit.reprofile_pending:
                self._restart(trainer, pl_module, batch)
            elif self.fit.key is None:  # the first training batch
                self._start(trainer, pl_module, batch)
            profiler = self.fit.profiler  # _start may have made one, or stepped aside
            if self.fit.active and profiler is not None and not profiler.done:
                self._step(trainer)
        self.fit.count_batch()  # this batch runs at the limit now in force

    def on_structure_change(
        self, trainer: L.Trainer, pl_module: L.LightningModule, change: StructureChange
    ) -> None:
        """The net changed shape (pruned): its profile no longer applies; profile it at the next batch."""
        started = self.fit.profiler is not None or self.status == st.CACHED or self.fit.source is not None
        if not self.settings.reprofile_on_change or not started or self._guard.stopped:
            return
        self.fit.reprofile_pending = True
        self.fit.active = True

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

    # ---- starting ---------------------------------------------------------------------------
    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        """The first training batch (or the first after a prune): cache, dry run or a new profile."""
        fit, s = self.fit, self.settings
        assert fit.constraints_mW is not None
        constraints = fit.constraints_mW
        fit.world_size = trainer.world_size
        fit.key = cache.profile_key(
            gpu=fit.gpu_name,
            net=net_signature(pl_module),
            batch=batch,
            precision=str(trainer.precision),
            world_size=trainer.world_size,
            pl_step_W=s.pl_step_W,
            limits_mW=constraints,
        )
        fit.profile_file = self._profile_path(fit.key)
        # rank 0's cache and grid for every rank, so all change limits together (the cards are alike
        # under DDP, but a node without rank 0's cache file must not profile alone)
        cached = collective.decide_on_rank_zero(lambda: cache.load_cached(fit.profile_file))
        fit.limits = collective.decide_on_rank_zero(lambda: plan.limits_W(constraints, s.pl_step_W))
        val_every = getattr(trainer, "val_check_batch", None)
        segment = plan.segment_batches(trainer.num_training_batches, val_every)
        if cached is None and segment < 2:
            self._epoch_too_short(trainer, segment)
        elif self.dry_run:
            self._report_dry_run(trainer, cached)
        else:
            self._take_the_card()
            if cached is not None:
                self._choose_from_cache(trainer, cached)
            else:
                fit.profiler = self._new_profiler(trainer)

    def _new_profiler(self, trainer: L.Trainer) -> Profiler:
        s = self.settings
        accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
        return Profiler(
            limits_W=list(self.fit.limits),
            wait=s.wait_steps,
            warmup=s.warmup_steps,
            profile=s.profile_steps,
            block=block_size(s.profile_steps, s.blocks, accumulate),
            set_limit=lambda watts: self._set_limit(trainer, watts, "profiling"),
            meter=ZeusMeter(self.fit.zeus_monitor),
            decide=self._decide,
        )

    def _epoch_too_short(self, trainer: L.Trainer, segment: float) -> None:
        details = {"batches": int(segment)}
        if not self.fit.reprofiles:
            self._step_aside(trainer, st.EPOCH_TOO_SHORT, **details)
            return
        # Re-profiling after a prune found no cached profile for the new net: training is under way,
        # so do not stop it; put the original limit back and train on without tuning.
        self.fit.active = False
        self.fit.reason = st.EPOCH_TOO_SHORT
        self.status = st.SKIPPED
        self.skipped_reason = st.reason_text(st.EPOCH_TOO_SHORT, **details)
        self._put_back("epoch too short to profile the changed net")
        log.warning("power: stops tuning: %s", self.skipped_reason)

    def _report_dry_run(self, trainer: L.Trainer, cached: list[dict[str, float]] | None) -> None:
        """Say what a real run would do. Reads only: no limit, mode or clock is changed."""
        fit, s = self.fit, self.settings
        fit.active = False
        self.status = st.DRY_RUN
        would_choose = None
        if cached is not None:
            would_choose = choose.decide(cache_samples(cached), True, self._rule(), confirm=False).chosen_W
        fit.plan = plan.dry_run_plan(
            gpu=fit.gpu_name,
            access=str(fit.access),
            current_limit_W=fit.original_limit_W,
            limits=fit.limits,
            counts=(s.wait_steps, s.warmup_steps, s.profile_steps),
            selector=report.selector_text(s),
            profile_file=str(fit.profile_file) if fit.profile_file else None,
            cached=cached is not None,
            would_choose_W=would_choose,
            forced_by_env=self.forced_dry_run,
        )
        if trainer.is_global_zero:
            log.info("%s", report.dry_run_line(fit, s, would_choose, self.forced_dry_run))

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
        fit = self.fit
        self._cancel_window()
        fit.profiler = None
        fit.reprofile_pending = False
        fit.reprofiles += 1
        fit.chosen_limit_W = fit.source = fit.adopted_selector = None
        fit.profile, fit.confirmed_W = {}, []
        self.status = st.PROFILING
        self._start(trainer, pl_module, batch)

    # ---- stepping ---------------------------------------------------------------------------
    def _decide(self, samples: list[Sample], final: bool) -> Decision:
        """The profiler's round is measured: pool the ranks' samples, rank 0 decides, all ranks follow."""
        pooled = collective.pool_samples(samples)
        self.fit.samples = pooled

        def make() -> Decision:
            try:
                return choose.decide(pooled, final, self._rule(), self.settings.confirm)
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
        profiler = self.fit.profiler
        assert profiler is not None
        try:
            profiler.before_batch()
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
        if profiler.done:
            assert profiler.chosen_W is not None
            self.fit.confirmed_W = list(profiler.confirmed_W)
            self._done(trainer, profiler.chosen_W, self.fit.samples, from_cache=False)

    def _pause(self) -> None:
        if self.fit.profiler is not None and self.fit.active:
            self.fit.profiler.pause()

    def _done(self, trainer: L.Trainer, chosen_W: int, samples: list[Sample], from_cache: bool) -> None:
        fit = self.fit
        fit.active = False  # nothing per batch now; on_structure_change wakes it for a re-profile
        fit.chosen_limit_W = chosen_W
        fit.profile = {str(w): m.as_record() for w, m in choose.summarize(samples).items()}
        self.status = st.CACHED if from_cache else st.TUNED
        if not from_cache and trainer.is_global_zero:
            cache.save_profile(fit.profile_file, fit.key, [sample_record(x) for x in samples])
        if trainer.is_global_zero:
            log.info(
                "Power limit %d W chosen by %s%s (original %d W, restored at fit end). Profile: %s",
                chosen_W,
                report.selector_text(self.settings),
                f" from the cached profile {fit.profile_file}" if from_cache else "",
                fit.original_limit_W,
                report.profile_table(fit.profile),
            )

    # ---- restoring ----------------------------------------------------------------------------
    def _finish_fit(self, why: str) -> None:
        fit = self.fit
        self._cancel_window()
        unfinished = fit.profiler is not None and not fit.profiler.done and self.status == st.PROFILING
        if unfinished:
            self.status = st.INCOMPLETE
        fit.active = False
        self._guard.restore(why)
        self._guard.remove()
        if fit.limit_now_W is not None:
            fit.note_current(None)
        if unfinished and not fit.warned:
            fit.warned = True
            log.warning("%s", report.unfinished_line(fit))

    # ---- results ----------------------------------------------------------------------------
    def summary_figures(self) -> dict[str, Any]:
        """The base's `power/status` (and `power/skipped`), `power/reason` when it stepped aside, the rest."""
        out = super().summary_figures()
        if self.fit.reason is not None:
            out["power/reason"] = self.fit.reason
        return out

    def method_figures(self) -> dict[str, Any]:
        """`power/*` figures for summary.json: limits, the profile, the dry-run plan."""
        return report.method_figures(self.fit, report.selector_text(self.settings), self.restored)

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        return super().report_rows(summary) or report.table_row(summary)


def _is_rank_zero() -> bool:
    """Rank 0 (or no process group): the rank that logs."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


__all__: Sequence[str] = ["Power", "make_selector", "net_signature"]
