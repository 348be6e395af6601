"""What one fit of the tuner knows and has changed: one record, replaced per fit (not reset by hand)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattwise.methods.power.profiler import Profiler, Sample


@dataclass
class FitState:
    """The tuner's per-fit state; `Power._reset` starts a fit with a new one."""

    # what the figures report
    reason: str | None = None  # why it stepped aside: one of status.REASONS
    chosen_limit_W: int | None = None
    original_limit_W: int | None = None
    access: str | None = None  # how limits are changed: zeusd or nvml
    profile: dict[str, dict[str, float]] = field(default_factory=dict)
    confirmed_W: list[int] = field(default_factory=list)  # close candidates measured a second time
    limit_log: list[tuple[int, int]] = field(default_factory=list)  # (global step, watts) at every change
    plan: dict[str, Any] | None = None  # the dry run's
    profile_file: Path | None = None
    reprofiles: int = 0
    source: str | None = None  # who chose the limit when not this tuner (the joint search)
    adopted_selector: str | None = None
    limits: list[int] = field(default_factory=list)  # the grid tried
    # the card and the profile under way
    gpu: Any = None
    zeus_monitor: Any = None
    constraints_mW: tuple[int, int] | None = None
    gpu_name: str = ""
    profiler: Profiler | None = None
    key: dict[str, Any] | None = None  # the profile's cache key; None until the first training batch
    samples: list[Sample] = field(default_factory=list)  # the job's samples (pooled over ranks)
    world_size: int = 1
    active: bool = False  # there is something to do in the batch hook
    reprofile_pending: bool = False  # the net changed shape: the next batch profiles again
    warned: bool = False
    persistence_on: bool = False
    lent: bool = False  # the batch-size finder holds a LimitAccess
    # where the fit trained
    batches_at: dict[int, int] = field(default_factory=dict)  # training batches run at each limit
    seconds_at: dict[int, float] = field(default_factory=dict)
    limit_now_W: int | None = None
    since: float = 0.0

    def note_current(self, watts: int | None) -> None:
        """Book the wall time since the last change to the limit that was in force."""
        now = time.monotonic()
        if self.limit_now_W is not None:
            spent = now - self.since
            self.seconds_at[self.limit_now_W] = self.seconds_at.get(self.limit_now_W, 0.0) + spent
        self.limit_now_W, self.since = watts, now

    def count_batch(self) -> None:
        """A training batch runs at the limit now in force."""
        if self.limit_now_W is not None:
            self.batches_at[self.limit_now_W] = self.batches_at.get(self.limit_now_W, 0) + 1

    def trained_at_W(self) -> int | None:
        """The limit the run trained at: the choice, else the one most training batches ran at."""
        if self.chosen_limit_W is not None:
            return self.chosen_limit_W
        if self.batches_at:
            return max(self.batches_at, key=lambda w: (self.batches_at[w], w))
        return self.original_limit_W
