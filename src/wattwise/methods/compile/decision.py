"""Whether compiling pays, as pure functions of measured costs, and the fit-start trial's schedule.

Compiling costs once (tens of seconds of CPU on a small CPU net, seconds to minutes on a GPU) and
saves a little on every step after; so it pays only over enough steps. Two questions, in order:

1. `worth_trying`, before paying the compile: with the eager steps measured, could even the most
   a compiled step is assumed to save (`max_saving` of it) over the steps left repay a compile of
   `expected_compile_s`? If not, the net stays eager and nothing is compiled.
2. `decide`, after measuring the compile and the compiled steps: keep the compiled net only if
   (eager - compiled) per step x the steps left exceeds the compile's measured cost.

Costs are joules where the run's meter reads energy, else seconds (`unit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Costs:
    """What the trial measured: per step eager and compiled, and the compile beyond eager steps."""

    eager: float
    compiled: float
    compile: float
    unit: str  # "J" or "s"


@dataclass(frozen=True)
class Decision:
    """Keep the compiled net? With the break-even (None: a compiled step saves nothing)."""

    kept: bool
    break_even_steps: float | None
    steps_left: float
    saving_per_step: float


def decide(costs: Costs, steps_left: float) -> Decision:
    """Keep compiled when the saving over the steps left exceeds the compile's cost."""
    saving = costs.eager - costs.compiled
    if saving <= 0:
        return Decision(False, None, steps_left, saving)
    break_even = max(costs.compile, 0.0) / saving
    return Decision(steps_left > break_even, break_even, steps_left, saving)


def expected_compile_cost(expected_s: float, eager: float, eager_s: float, unit: str) -> float:
    """The compile's cost assumed before paying it: its seconds, at the eager steps' power for joules."""
    if unit == "s" or eager_s <= 0:
        return expected_s
    return expected_s * eager / eager_s


def worth_trying(eager: float, expected_cost: float, steps_left: float, max_saving: float) -> bool:
    """Could even the best case (each step `max_saving` cheaper) repay the compile over the steps left?"""
    return math.isinf(steps_left) or max_saving * eager * steps_left > expected_cost


def steps_left(estimated_steps: float, global_step: int, accumulate: int) -> float:
    """Training batches still to run: the Trainer's estimate of optimizer steps, minus those done."""
    return max(0.0, (float(estimated_steps) - global_step) * max(1, accumulate))


def describe(decision: Decision, costs: Costs) -> str:
    """One line: the choice and the figures behind it."""
    u = costs.unit
    per_step = f"eager {costs.eager:.4g} {u}/step, compiled {costs.compiled:.4g} {u}/step"
    if decision.break_even_steps is None:
        return f"compiled steps are no cheaper ({per_step}): eager kept"
    verdict = "compiled kept" if decision.kept else "eager kept"
    return (
        f"{verdict}: {per_step}, compile {costs.compile:.4g} {u}, break-even after "
        f"{decision.break_even_steps:.0f} steps, {decision.steps_left:.0f} left"
    )


# ---- the trial's schedule ---------------------------------------------------------------------------
EAGER, COMPILE, COMPILED = "eager", "compile", "compiled"


@dataclass
class Trial:
    """Where the fit-start trial is, batch by batch: `advance()` names what this batch start does.

    Batch 0 is an eager warm-up; eager steps are measured over the next `measure` batches; then
    the net is compiled and its first `warm` compiled steps (the compile itself, CUDA graph
    recording) are the compile's window; then `measure` compiled steps. Each window ends at the
    start of the batch after its last step, so the trial needs `batches()` batches of one epoch.
    """

    measure: int
    warm: int
    step: int = 0

    def batches(self) -> int:
        return 2 + 2 * self.measure + self.warm

    def advance(self) -> list[tuple[str, str]]:
        """This batch start's events, in order: ("end"|"begin", window) pairs."""
        k, m, w = self.step, self.measure, self.warm
        self.step += 1
        events: list[tuple[str, str]] = []
        if k == 1 + m:
            events.append(("end", EAGER))
        if k == 1 + m + w:
            events.append(("end", COMPILE))
        if k == 1 + 2 * m + w:
            events.append(("end", COMPILED))
        if k == 1:
            events.append(("begin", EAGER))
        if k == 1 + m:
            events.append(("begin", COMPILE))
        if k == 1 + m + w:
            events.append(("begin", COMPILED))
        return events
