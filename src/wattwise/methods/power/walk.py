"""The profiling schedule as a state machine: its states are plain data, `advance` its one transition.

Like Zeus's GlobalPowerLimitOptimizer (Ready -> Warmup -> Profiling -> Done), with the phases this
tuner needs on top of it: a wait before the first limit, pauses (validation, epoch ends) that close
the open measuring window and cost one unmeasured batch, and a second round that measures the close
candidates again before the choice is final:

    Waiting -> Warmup(limit) <-> Measuring(limit) -> ... -> Deciding -> Done
                       ^                                       |
                       +------- round 2 (confirm) <------------+

`advance(walk, event, schedule)` answers the next state and the effects to carry out, in order:
set a limit, open / close / drop a measuring window, ask for a decision. It reads no clock, meter
or card, so the schedule can be unit-tested and replayed; `profiler.Profiler` carries the effects
out. Every DDP rank, fed the same batches, walks it in step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import TypeAlias


@dataclass(frozen=True)
class Schedule:
    """The constants of the walk: batches per phase."""

    warmup: int  # unmeasured batches after each limit change (>= 1)
    profile: int  # measured batches per limit and round
    block: int  # measured batches per window


# ---- states -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Waiting:
    """Before the first limit: `left` batches still to let pass (cudnn autotuning, compilation)."""

    left: int


@dataclass(frozen=True)
class Warmup:
    """At `limit_W`: `left` more unmeasured batches, then measuring; `measured` so far this round."""

    limit_W: int
    left: int
    measured: int = 0


@dataclass(frozen=True)
class Measuring:
    """At `limit_W`: window `window` is open over the last `steps` batches; `measured` before them."""

    limit_W: int
    measured: int
    steps: int
    window: str


@dataclass(frozen=True)
class Measured:
    """`limit_W` is measured (a pause ended its last window): the next batch moves on."""

    limit_W: int


@dataclass(frozen=True)
class Deciding:
    """The round is measured: waiting for the decision (`Decision` is the event that answers)."""


@dataclass(frozen=True)
class Done:
    """The choice is made: the fit trains at `chosen_W`."""

    chosen_W: int | None


Phase: TypeAlias = Waiting | Warmup | Measuring | Measured | Deciding | Done


@dataclass(frozen=True)
class Walk:
    """Where the schedule stands: the phase and the round's bookkeeping."""

    phase: Phase
    queue: tuple[int, ...]  # limits still to measure this round, in order
    round: int = 1  # 2 while confirming close candidates
    windows: int = 0  # windows opened so far (they are named by it)
    confirmed_W: tuple[int, ...] = ()  # the limits measured a second time


def start(limits_W: list[int], wait: int) -> Walk:
    return Walk(Waiting(wait), tuple(limits_W))


# ---- events and effects ---------------------------------------------------------------------------
class Event(Enum):
    BATCH = "batch"  # a training batch is about to run (the one before it has run)
    PAUSE = "pause"  # validation or an epoch end
    CANCEL = "cancel"  # the fit ends mid-profile: drop the open window


@dataclass(frozen=True)
class Answer:
    """`decide`'s answer to `Deciding`: a limit to train at, or limits to measure once more."""

    chosen_W: int | None
    confirm_W: tuple[int, ...] = ()


@dataclass(frozen=True)
class SetLimit:
    watts: int


@dataclass(frozen=True)
class Open:
    window: str


@dataclass(frozen=True)
class Close:
    """End `window` and record it as a sample: `steps` batches at `limit_W` in `round`."""

    window: str
    limit_W: int
    round: int
    steps: int


@dataclass(frozen=True)
class Drop:
    window: str


@dataclass(frozen=True)
class Decide:
    """Ask for a decision on every sample so far (`final`: no second round may follow)."""

    final: bool


Effect: TypeAlias = SetLimit | Open | Close | Drop | Decide
Step: TypeAlias = tuple[Walk, tuple[Effect, ...]]


# ---- the transition -------------------------------------------------------------------------------
def advance(walk: Walk, event: Event | Answer, schedule: Schedule) -> Step:
    """The one transition: the next state and the effects, for a batch, a pause, a cancel or an answer."""
    p = walk.phase
    if isinstance(event, Answer):
        assert isinstance(p, Deciding), f"an answer while {p}"
        return _answered(walk, event, schedule)
    if isinstance(p, Done | Deciding):
        return walk, ()
    if event is Event.CANCEL:
        if isinstance(p, Measuring):  # the next batch opens a new window at the same limit
            return replace(walk, phase=Warmup(p.limit_W, 0, p.measured + p.steps)), (Drop(p.window),)
        return walk, ()
    if event is Event.PAUSE:
        if isinstance(p, Warmup):  # the batch after a pause is never measured
            return replace(walk, phase=Warmup(p.limit_W, max(p.left, 1), p.measured)), ()
        if isinstance(p, Measuring):
            close = (Close(p.window, p.limit_W, walk.round, p.steps + 1),)
            if p.measured + p.steps + 1 >= schedule.profile:
                return replace(walk, phase=Measured(p.limit_W)), close
            return replace(walk, phase=Warmup(p.limit_W, 1, p.measured + p.steps + 1)), close
        return walk, ()  # Waiting (its batches are not measured anyway) or Measured
    return _batch(walk, p, schedule)


def _batch(walk: Walk, p: Phase, schedule: Schedule) -> Step:
    """A training batch is about to run."""
    if isinstance(p, Waiting):
        if p.left > 0:
            return replace(walk, phase=Waiting(p.left - 1)), ()
        return _next_limit(walk, schedule, ())
    if isinstance(p, Warmup):
        if p.left > 0:
            return replace(walk, phase=Warmup(p.limit_W, p.left - 1, p.measured)), ()
        return _open(walk, p.limit_W, p.measured, ())
    if isinstance(p, Measured):
        return _next_limit(walk, schedule, ())
    assert isinstance(p, Measuring)
    steps, measured = p.steps + 1, p.measured + p.steps + 1  # the batch that just ran was measured
    close = (Close(p.window, p.limit_W, walk.round, steps),)
    if measured >= schedule.profile:  # the limit is measured: on to the next one with this batch
        return _next_limit(walk, schedule, close)
    if steps >= schedule.block:  # the block is full: this batch starts the next one
        return _open(walk, p.limit_W, measured, close)
    return replace(walk, phase=Measuring(p.limit_W, p.measured, steps, p.window)), ()


def _open(walk: Walk, limit_W: int, measured: int, done: tuple[Effect, ...]) -> Step:
    n = walk.windows + 1
    name = f"__wattwise_power_{limit_W}W_{n}"
    return replace(walk, phase=Measuring(limit_W, measured, 0, name), windows=n), (*done, Open(name))


def _next_limit(walk: Walk, schedule: Schedule, done: tuple[Effect, ...]) -> Step:
    """Set the next limit of the round (this batch is its first warm-up batch), or ask for a decision."""
    if not walk.queue:
        return replace(walk, phase=Deciding()), (*done, Decide(final=walk.round > 1))
    limit, *rest = walk.queue
    phase = Warmup(limit, schedule.warmup - 1)
    return replace(walk, phase=phase, queue=tuple(rest)), (*done, SetLimit(limit))


def _answered(walk: Walk, answer: Answer, schedule: Schedule) -> Step:
    """A final answer ends the walk at its limit; a request to confirm starts round 2 with this batch."""
    if answer.chosen_W is not None or not answer.confirm_W:
        effects = (SetLimit(answer.chosen_W),) if answer.chosen_W is not None else ()
        return replace(walk, phase=Done(answer.chosen_W)), effects
    again = replace(walk, round=walk.round + 1, queue=tuple(answer.confirm_W), confirmed_W=answer.confirm_W)
    return _next_limit(again, schedule, ())
