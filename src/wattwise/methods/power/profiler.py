"""The profiling schedule: which batch runs at which limit, and which batches are measured.

Each limit gets `warmup` unmeasured batches after it is set, then `profile` measured batches in
blocks of `block` batches, one measuring window per block, so the profile has several samples per
limit and records their spread. A pause (validation, an epoch end) closes the open block early and
keeps what it measured; after a pause one batch runs unmeasured (it carries the dataloader's restart
and the switch back from evaluation) and measuring resumes at the same limit. So profiling needs no
stretch of training longer than two batches, and validation time is never measured.

When a round of limits is measured, `decide` gets every sample so far and answers with a limit to
train at, or with limits to measure once more (close candidates to confirm); the second answer is
final. The schedule only counts batches: every rank of a DDP run, given the same batches, walks it
in step, so the ranks change limits together and the same `decide` call happens on all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Sample:
    """One measuring window: `steps` training batches at `limit_W` in round `round` (1 or 2)."""

    limit_W: int
    round: int
    steps: int
    energy_J: float
    time_s: float


@dataclass(frozen=True)
class Decision:
    """`decide`'s answer: the limit to train at, or (after round 1 only) the limits to measure again."""

    chosen_W: int | None = None
    confirm_W: tuple[int, ...] = ()
    error: str | None = None  # no choice possible (e.g. a window read 0 J); the tuner gives up


class Meter(Protocol):
    """Measuring windows (the run's Zeus monitor, through the adapter)."""

    def begin(self, name: str) -> None: ...

    def end(self, name: str) -> tuple[float, float]:  # energy (J), time (s)
        ...

    def cancel(self, name: str) -> None: ...


def block_size(profile: int, blocks: int, accumulate: int = 1) -> int:
    """Batches per measuring window: `profile` split into `blocks`, a whole number of optimizer steps."""
    size = math.ceil(profile / max(1, min(blocks, profile)))
    return math.ceil(size / accumulate) * accumulate


@dataclass
class Profiler:
    """Walks the schedule; call `before_batch` at every training batch start and `pause` at every pause."""

    limits_W: list[int]
    wait: int
    warmup: int
    profile: int
    block: int
    set_limit: Callable[[int], None]
    meter: Meter
    decide: Callable[[list[Sample], bool], Decision]
    samples: list[Sample] = field(default_factory=list)
    chosen_W: int | None = None
    round: int = 1
    confirmed_W: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self._queue = list(self.limits_W)
        self._current: int | None = None
        self._wait_left = self.wait
        self._warm_left = 0
        self._measured = 0  # measured batches at the current limit in this round
        self._window: str | None = None
        self._window_steps = 0
        self._windows = 0
        self._fresh = False  # the next batch is the first after a pause
        self._limit_done = False  # the current limit is measured; move on at the next batch

    @property
    def done(self) -> bool:
        return self.chosen_W is not None

    @property
    def current_W(self) -> int | None:
        return self._current

    # ---- hooks --------------------------------------------------------------------------------
    def before_batch(self) -> None:
        """A training batch is about to run: account for the last one, then set up this one."""
        if self.done:
            return
        if self._window is not None:  # the batch that just ran was measured
            self._count_measured()
            if self._window is not None:  # the block goes on: this batch is measured in it too
                return
        if self._limit_done:
            self._next_limit()
            if self.done:
                return
        if self._wait_left > 0:
            self._wait_left -= 1
            self._fresh = False
            return
        if self._current is None:
            self._next_limit()
        if self._fresh or self._warm_left > 0:
            self._warm_left = max(0, self._warm_left - 1)
            self._fresh = False
            return
        self._windows += 1
        self._window = f"__wattwise_power_{self._current}W_{self._windows}"
        self._window_steps = 0
        self.meter.begin(self._window)

    def pause(self) -> None:
        """Validation or an epoch end: close the open block with what it measured; resume after."""
        if self.done:
            return
        if self._window is not None:
            self._count_measured()
            self._close()
        self._fresh = True

    def cancel(self) -> None:
        """Fit ends mid-profile: drop the open window without recording it."""
        if self._window is not None:
            self.meter.cancel(self._window)
            self._window = None

    # ---- the walk -----------------------------------------------------------------------------
    def _count_measured(self) -> None:
        self._window_steps += 1
        self._measured += 1
        if self._measured >= self.profile:
            self._close()
            self._limit_done = True
        elif self._window_steps >= self.block:
            self._close()

    def _close(self) -> None:
        if self._window is None:
            return
        name, steps = self._window, self._window_steps
        self._window, self._window_steps = None, 0
        energy_J, time_s = self.meter.end(name)
        assert self._current is not None
        self.samples.append(Sample(self._current, self.round, steps, energy_J, time_s))

    def _next_limit(self) -> None:
        self._limit_done = False
        if not self._queue:
            self._end_round()
            if self.done:
                return
        self._current = self._queue.pop(0)
        self._warm_left = self.warmup
        self._measured = 0
        self.set_limit(self._current)

    def _end_round(self) -> None:
        decision = self.decide(list(self.samples), self.round > 1)
        if decision.chosen_W is not None or not decision.confirm_W:
            self.chosen_W = decision.chosen_W
            self._current = decision.chosen_W
            if decision.chosen_W is not None:
                self.set_limit(decision.chosen_W)
            return
        self.round += 1
        self.confirmed_W = tuple(decision.confirm_W)
        self._queue = list(decision.confirm_W)
