"""Lending the card to the batch-size finder's joint search of batch size and power limit.

The finder (`callbacks.batch_size.joint_power: true`) asks for the `power_limits` service
(methods/shared/power_access.py): this tuner lends its grid and a `set_limit` through its own handle
and guard (`lend_limits`), and takes back the finder's choice (`adopt_limit`) or the card unchanged
(`return_limits`, after which it profiles on its own as usual).
"""

from __future__ import annotations

import logging

import lightning as L

from wattwise.methods.power import plan
from wattwise.methods.power import status as st
from wattwise.methods.power.core import TunerCore
from wattwise.methods.shared.power_access import JOINT_SOURCE, LimitAccess
from wattwise.methods.shared.zeus_adapter import GpuError, NoPermission

log = logging.getLogger("wattwise.methods.power.callback")  # one logger for the whole method


class JointSearch(TunerCore):
    """The `power_limits` service (a `PowerLimitLender`) on top of the tuner's core."""

    _fit_open: bool
    _opened_early: bool

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
        if not self.active or not self.fit.active or self.fit.gpu is None or self.fit.constraints_mW is None:
            return f"the power tuner is not tuning: {self.skipped_reason or self.status}"
        if self.dry_run:
            why = "WATTWISE_POWER_DRY_RUN=1" if self.forced_dry_run else "callbacks.power.dry_run=true"
            return f"the power tuner is in a dry run ({why}): no limit may change"
        self.fit.limits = plan.limits_W(self.fit.constraints_mW, self.settings.pl_step_W)
        original = self.fit.original_limit_W
        assert original is not None
        probe = next((w for w in self.fit.limits if w != original), original)
        self._take_the_card()
        try:
            self._set_limit(trainer, probe, f"{JOINT_SOURCE}: first limit")
        except GpuError as err:
            self._give_up(trainer, st.NO_PERMISSION if isinstance(err, NoPermission) else st.ERROR, err)
            return f"the power tuner cannot change the limit ({self.status}: {err})"
        self.fit.lent, self.fit.active = True, False  # the finder measures the limits, not this tuner
        return LimitAccess(
            limits_W=tuple(self.fit.limits),
            warmup_steps=self.settings.warmup_steps,
            max_limit_W=self.fit.constraints_mW[1] // 1000,
            original_limit_W=self.fit.original_limit_W,
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
        if not self.fit.lent:
            raise RuntimeError("adopt_limit needs lend_limits first")
        self._set_limit(trainer, int(limit_W), source)
        self.fit.lent = False
        self.fit.chosen_limit_W = int(limit_W)
        self.fit.source = source
        self.fit.adopted_selector = selector or None
        self.status = st.CACHED if cached else st.TUNED
        if trainer.is_global_zero:
            log.info(
                "Power limit %d W chosen by the %s%s (original %d W, restored at fit end); not profiled "
                "here.",
                limit_W,
                source,
                f" ({selector})" if selector else "",
                self.fit.original_limit_W,
            )

    def return_limits(self, trainer: L.Trainer, why: str) -> None:
        """The finder chose no limit: the original back, and this tuner profiles on its own as usual."""
        if not self.fit.lent:
            return
        self.fit.lent = False
        self._put_back(why)
        gpu, original_mW = self._guard.gpu, self._guard.original_mW
        self._guard.reset()
        if gpu is not None and original_mW is not None:
            self._guard.remember(gpu, original_mW)
        self.fit.persistence_on = False
        self.fit.limits = []
        self.fit.active = True
