"""What the power tuner lends the batch-size finder for the joint search of batch size and limit.

The finder (`callbacks.batch_size.joint_power: true`) measures every candidate batch size at every
limit of the tuner's own grid, as in the Zeus paper (the best limit for each batch size; the batch
size chosen at its best limit). It never touches the card itself: the tuner lends it a
`LimitAccess` (its grid, its warm-up per limit change, the card's maximum and a `set_limit` that goes
through the tuner's own GPU handle and guard), and the finder hands the chosen limit back with
`Power.adopt_limit` (or `return_limits` when it chose nothing). Plain data and one callable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

JOINT_SOURCE = "batch_size joint search"  # `power/source` when the finder chose the limit


@dataclass(frozen=True)
class LimitAccess:
    """The tuner's grid and card, lent for one fit's joint search."""

    limits_W: tuple[int, ...]  # the tuner's grid, highest first (plan.limits_W)
    warmup_steps: int  # unmeasured steps after each limit change (callbacks.power.warmup_steps)
    max_limit_W: int  # the card's maximum limit: zeus_cost's max_power (times the world size)
    original_limit_W: int  # what the tuner restores at fit end
    set_limit: Callable[[int], None]  # through the tuner's handle; the guard restores the original
