"""One search: every candidate measured inside one meter window, then the run put back as it was.

The window (`wattwise.batch_size.search`) gives the search's own cost (`batch_size/search_J`,
`search_s`); `snapshot`/`restore` undo the steps it trained; `pool` makes the figures the job's
(every rank's energy summed, the slowest rank's time). The callback decides whether to search at
all (a cached profile needs none) and what to do with the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from wattwise.methods.batch_size.measure import (
    KEY_PREFIX,
    CandidateMeasurement,
    Measure,
    pool,
    restore,
    search,
    search_joint,
    snapshot,
)
from wattwise.methods.shared.power_access import LimitAccess


@dataclass(frozen=True)
class SearchResult:
    """Each candidate's pooled measurement and what the whole search cost (None: not measured)."""

    measurements: list[CandidateMeasurement]
    energy_J: float | None
    time_s: float


def run_search(
    trainer: Any,
    pl_module: torch.nn.Module,
    meter: Any,
    sizes: Sequence[int],
    measure: Measure,
    access: LimitAccess | None = None,
) -> SearchResult:
    """Measure every candidate (at every lent limit), then put the net, optimizers and RNG back."""
    device = trainer.strategy.root_device
    window = f"{KEY_PREFIX}.search"
    started = time.perf_counter()
    if meter is not None:
        meter.begin(window)
    state = snapshot(trainer, pl_module)
    try:
        if access is not None:
            local = search_joint(
                sizes, access.limits_W, access.set_limit, access.warmup_steps, measure, device
            )
        else:
            local = search(sizes, measure, device)
    finally:
        restore(state, trainer, pl_module)
        reading = meter.end(window) if meter is not None else None
    measurements = pool(local, device)
    own = CandidateMeasurement(
        0, 1, 1, reading.total_J if reading else None, time.perf_counter() - started, None
    )
    spent = pool([own], device)[0]
    return SearchResult(measurements, spent.energy_J, spent.time_s)
