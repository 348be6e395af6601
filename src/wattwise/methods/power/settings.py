"""`callbacks.power.*`: the tuner's config keys, their defaults and their checks, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

from wattwise.methods.shared.settings import Check, MethodSettings, boolean, integer, number, one_of, setting
from wattwise.methods.shared.zeus_adapter import SELECTORS

KEY = "callbacks.power"

# A cache folder: a path (a string or a Path); "" means no cache, as null does.
_PATH = Check(lambda v: isinstance(v, str | os.PathLike), "a path or null", (3, True))


@dataclass(frozen=True)
class PowerSettings(MethodSettings):
    """The knobs of `Power` (`if_not_applicable` is the base's, methods/base.py).

    selector: `energy`, `time`, `zeus_cost` or `max_slowdown`.
    eta: `zeus_cost`'s weight on energy against time, in [0, 1].
    max_slowdown: `max_slowdown`'s largest allowed step-time factor against the highest limit, >= 1.
    wait_steps: steps to let pass before profiling (cudnn autotuning, compilation).
    warmup_steps: steps at each limit before measuring, >= 1.
    profile_steps: measured steps at each limit, >= 1.
    blocks: measuring windows per limit (their spread is the noise), >= 1.
    confirm: measure the limits the noise cannot tell from the pick once more.
    pl_step_W: watts between the limits tried (from the card's minimum up, plus its maximum).
    profile_dir: where profiles are cached (null or "": no cache).
    reprofile_on_change: profile again when the net changes shape (a prune).
    dry_run: change nothing; report the limits it would try and what a cached profile would choose.
    """

    selector: str = setting("max_slowdown", one_of(*SELECTORS), doc="Zeus's selector")
    eta: float = setting(0.5, number(low=0, high=1), doc="zeus_cost's weight on energy")
    max_slowdown: float = setting(1.1, number(low=1), doc="largest step-time factor (max_slowdown)")
    wait_steps: int = setting(1, integer(low=0), doc="steps before profiling")
    warmup_steps: int = setting(10, integer(low=1), doc="unmeasured steps after each limit change")
    profile_steps: int = setting(40, integer(low=1), doc="measured steps per limit")
    blocks: int = setting(4, integer(low=1), doc="measuring windows per limit")
    confirm: bool = setting(True, boolean(), doc="measure close candidates again")
    pl_step_W: int = setting(25, integer(low=1), doc="watts between the limits tried")
    profile_dir: str | os.PathLike | None = setting(None, _PATH, optional=True, doc="profile cache")
    reprofile_on_change: bool = setting(True, boolean(), doc="profile again after a prune")
    dry_run: bool = setting(False, boolean(), doc="change nothing, report the plan")
