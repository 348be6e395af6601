"""The selection rule the power tuner and the batch-size finder share (Zeus's selectors' settings).

Both choose among measured candidates (limits, batch sizes, or pairs) with one of Zeus's
selectors (`zeus_adapter.SELECTORS`); `Rule` is that choice's settings, as the config gives them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """The selector's settings, as the config gives them."""

    selector: str
    eta: float = 0.5
    max_slowdown: float = 1.1
    world_size: int = 1
