"""The profiling schedule: which batch runs at which limit, and which batches are measured.

Each limit gets `warmup` unmeasured batches after it is set, then `profile` measured batches in
blocks of `block` batches, one measuring window per block, so the profile has several samples per
limit and records their spread. A pause (validation, an epoch end) closes the open block early and
keeps what it measured; after a pause one batch runs unmeasured (it carries the dataloader's restart
and the switch back from evaluation) and measuring resumes at the same limit. So profiling needs no
stretch of training longer than two batches, and validation time is never measured.

When a round of limits is measured, `decide` gets every sample so far and answers with a limit to
train at, or with limits to measure once more (close candidates to confirm); the second answer is
final. The schedule itself is the state machine in `walk` (states as data, one transition
function); `Profiler` only carries its effects out: the card's limit, the meter's windows, the
samples and the call to `decide`. The schedule only counts batches: every rank of a DDP run, given
the same batches, walks it in step, so the ranks change limits together and the same `decide` call
happens on all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from wattwise.methods.power import walk as w


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

    def __post_init__(self) -> None:
        self.schedule = w.Schedule(self.warmup, self.profile, self.block)
        self.walk = w.start(self.limits_W, self.wait)

    @property
    def done(self) -> bool:
        return isinstance(self.walk.phase, w.Done) and self.walk.phase.chosen_W is not None

    @property
    def chosen_W(self) -> int | None:
        return self.walk.phase.chosen_W if isinstance(self.walk.phase, w.Done) else None

    @property
    def confirmed_W(self) -> tuple[int, ...]:
        return self.walk.confirmed_W

    def before_batch(self) -> None:
        """A training batch is about to run: account for the last one, then set up this one."""
        self._on(w.Event.BATCH)

    def pause(self) -> None:
        """Validation or an epoch end: close the open block with what it measured; resume after."""
        self._on(w.Event.PAUSE)

    def cancel(self) -> None:
        """Fit ends mid-profile: drop the open window without recording it."""
        self._on(w.Event.CANCEL)

    def _on(self, event: w.Event | w.Answer) -> None:
        """Advance the walk, then carry out its effects in order (a decision feeds back as an answer)."""
        self.walk, effects = w.advance(self.walk, event, self.schedule)
        for effect in effects:
            if isinstance(effect, w.SetLimit):
                self.set_limit(effect.watts)
            elif isinstance(effect, w.Open):
                self.meter.begin(effect.window)
            elif isinstance(effect, w.Close):
                energy_J, time_s = self.meter.end(effect.window)
                self.samples.append(Sample(effect.limit_W, effect.round, effect.steps, energy_J, time_s))
            elif isinstance(effect, w.Drop):
                self.meter.cancel(effect.window)
            else:
                decision = self.decide(list(self.samples), effect.final)
                self._on(w.Answer(decision.chosen_W, tuple(decision.confirm_W)))


def sample_record(sample: Sample) -> dict[str, float]:
    """A measuring window as the cache stores it."""
    return {
        "power_limit": sample.limit_W,
        "round": sample.round,
        "steps": sample.steps,
        "energy": sample.energy_J,
        "time": sample.time_s,
    }


def cache_samples(records: Sequence[Mapping[str, Any]]) -> list[Sample]:
    """The cache's records as samples."""
    return [
        Sample(
            limit_W=int(r["power_limit"]),
            round=int(r.get("round", 1)),
            steps=int(r["steps"]),
            energy_J=float(r["energy"]),
            time_s=float(r["time"]),
        )
        for r in records
    ]
