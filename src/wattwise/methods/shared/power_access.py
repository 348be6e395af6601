"""What the power tuner lends the batch-size finder for the joint search of batch size and limit.

The finder (`callbacks.batch_size.joint_power: true`) measures every candidate batch size at every
limit of the tuner's own grid, as in the Zeus paper (the best limit for each batch size; the batch
size chosen at its best limit). It never touches the card itself: the tuner lends it a
`LimitAccess` (its grid, its warm-up per limit change, the card's maximum and a `set_limit` that goes
through the tuner's own GPU handle and guard), and the finder hands the chosen limit back with
`adopt_limit` (or `return_limits` when it chose nothing). Plain data and one callable.

The finder never sees the tuner's class: the tuner `provides` the `power_limits` service, a
`PowerLimitLender`, and the run hands it to the finder (methods/services.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

JOINT_SOURCE = "batch_size joint search"  # `power/source` when the finder chose the limit


@dataclass(frozen=True)
class LimitAccess:
    """The tuner's grid and card, lent for one fit's joint search."""

    limits_W: tuple[int, ...]  # the tuner's grid, highest first (plan.limits_W)
    warmup_steps: int  # unmeasured steps after each limit change (callbacks.power.warmup_steps)
    max_limit_W: int  # the card's maximum limit: zeus_cost's max_power (times the world size)
    original_limit_W: int  # what the tuner restores at fit end
    set_limit: Callable[[int], None]  # through the tuner's handle; the guard restores the original


class PowerLimitLender(Protocol):
    """The `power_limits` service: what the finder may ask of the power tuner, and nothing more."""

    def lend_limits(self, trainer: Any) -> LimitAccess | str:
        """The grid and the card for one fit's joint search, or why not."""
        ...

    def adopt_limit(
        self, trainer: Any, limit_W: int, source: str = JOINT_SOURCE, selector: str = "", cached: bool = False
    ) -> None:
        """Train at the limit the joint search chose (the tuner restores the original at fit end)."""
        ...

    def return_limits(self, trainer: Any, why: str) -> None:
        """The joint search chose nothing: the original limit back; the tuner profiles on its own."""
        ...
