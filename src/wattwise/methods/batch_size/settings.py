"""`callbacks.batch_size.*` as one frozen settings object: the keys, their defaults and their checks.

The finder's constructor builds it (`BatchSizeSettings.build(KEY, ...)`), so every bad value fails
there in one line naming its key, before a run starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wattwise.methods.batch_size.lr_scaling import LR_RULES
from wattwise.methods.shared.settings import Check, MethodSettings, boolean, integer, number, one_of, setting
from wattwise.methods.shared.zeus_adapter import SELECTORS
from wattwise.utils.errors import ConfigError

KEY = "callbacks.batch_size"


def _auto_or_list(value: Any) -> bool:
    if isinstance(value, str):
        return value == "auto"
    return isinstance(value, Iterable)


# `auto`, or any list (Hydra's ListConfig too); what the list holds is checked in `check`.
CANDIDATES = Check(
    _auto_or_list,
    "auto or a list of batch sizes",
    ("all", 7),
    lambda v: v if isinstance(v, str) else tuple(v),
)


@dataclass(frozen=True)
class BatchSizeSettings(MethodSettings):
    """The finder's settings; see `BatchSize`'s Args for what each one means."""

    selector: str = setting("energy", one_of(*SELECTORS), doc="energy | time | zeus_cost | max_slowdown")
    eta: float = setting(0.5, number(low=0, high=1), doc="zeus_cost's weight on energy against time")
    max_slowdown: float = setting(1.1, number(low=1), doc="max_slowdown's s/sample factor")
    candidates: str | tuple[int, ...] = setting("auto", CANDIDATES, doc="auto or a list of batch sizes")
    min_batch_size: int = setting(16, integer(low=1), doc="auto's smallest size")
    max_batch_size: int = setting(4096, integer(low=1), doc="auto's largest size")
    min_steps_per_epoch: int = setting(8, integer(low=1), doc="fewest batches an epoch on one rank holds")
    warmup_steps: int = setting(2, integer(low=0), doc="unmeasured steps per candidate")
    measure_steps: int = setting(8, integer(low=1), doc="measured steps per candidate")
    max_memory_fraction: float = setting(0.9, number(low=0, high=1, strict=True), doc="peak memory share")
    lr_scaling: str = setting("auto", one_of(*LR_RULES), doc="auto | linear | sqrt | none")
    profile_dir: str | None = setting(None, optional=True, doc="profile cache folder (null: none)")
    joint_power: bool = setting(False, boolean(), doc="search batch size and power limit together")

    @classmethod
    def bad_combinations(cls) -> tuple[dict[str, Any], ...]:
        return ({"min_batch_size": 64, "max_batch_size": 32}, {"candidates": [32, 32]})

    def check(self, key: str) -> None:
        if self.max_batch_size < self.min_batch_size:
            raise ConfigError(
                f"{key}.max_batch_size must be >= min_batch_size ({self.min_batch_size}), "
                f"got {self.max_batch_size}"
            )
        if isinstance(self.candidates, tuple):
            sizes = list(self.candidates)
            if len(set(sizes)) < 2 or any(
                isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes
            ):
                raise ConfigError(
                    f"{key}.candidates must list at least 2 different integers >= 1, got {sizes}"
                )

    @property
    def candidate_sizes(self) -> str | tuple[int, ...]:
        """`auto`, or the listed sizes once each, ascending."""
        return self.candidates if isinstance(self.candidates, str) else tuple(sorted(set(self.candidates)))

    def selector_text(self) -> str:
        """The selector as the log line and the summary name it (`zeus_cost(eta=0.5) per sample`)."""
        if self.selector == "zeus_cost":
            return f"zeus_cost(eta={self.eta}) per sample"
        if self.selector == "max_slowdown":
            return f"max_slowdown({self.max_slowdown}) per sample"
        return f"{self.selector} per sample"
