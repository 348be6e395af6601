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
    """The knobs of `Power` (its docstring says what each does); `if_not_applicable` is the base's."""

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
