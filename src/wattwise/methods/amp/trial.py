"""The fit-start trial: which precisions to measure against each other, its steps, the cheaper one.

Whether mixed precision pays depends on the net as much as on the hardware (a GRU was 1.57x dearer
in bf16 on a CPU with native bf16), so with `precision: auto` the first steps of the fit try the
offered precision (and FP8 where planned) against 32-true. Plain data and pure functions: the
callback switches precisions and reads the meter where `Trial.advance` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

FP8 = "bf16-mixed+fp8"  # the trial candidate: bf16 autocast, the planned Linear layers in FP8


@dataclass(frozen=True)
class TrialPlan:
    """The candidates to measure (none: no trial) and, when there is none, why, for the figures."""

    candidates: list[str] = field(default_factory=list)
    fp8_note: str | None = None
    measure_note: str | None = None


def plan_trial(
    precision: str, chosen: str, fp8_planned: bool, measure_steps: int, batches: float
) -> TrialPlan:
    """FP8 (where planned) and the offered mixed precision against 32-true, if an epoch holds them."""
    candidates = [FP8] if fp8_planned else []
    if precision == "auto" and chosen != "32-true":
        candidates += [chosen, "32-true"]
    elif candidates:
        candidates.append(chosen)
    if measure_steps == 0 or len(candidates) < 2:
        note = "planned but not measured (measure_steps: 0): bf16 kept" if fp8_planned else None
        return TrialPlan(fp8_note=note)
    need = len(candidates) * (measure_steps + 1)
    if math.isfinite(batches) and batches < need:
        return TrialPlan(measure_note=f"not measured: {int(batches)} batches per epoch, {need} needed")
    return TrialPlan(candidates=candidates)


@dataclass
class Trial:
    """The candidates still to measure (the running one first), the step within it, what was measured.

    Each candidate gets one warm-up step (`switch`: train at it from this step), then
    `measure_steps` measured ones (`begin` at the first), and `end` at the step after: that step
    already belongs to the next candidate.
    """

    candidates: list[str]
    measure_steps: int
    step: int = 0
    started: float = 0.0
    costs: dict[str, tuple[float | None, float]] = field(default_factory=dict)  # (J, s) per step

    def advance(self) -> str:
        """This batch's event: `switch`, `begin`, `end` or `run` (nothing to do)."""
        k = self.step
        if k == 1 + self.measure_steps:
            self.step = 0
            return "end"
        self.step += 1
        return "switch" if k == 0 else "begin" if k == 1 else "run"


def cheaper(costs: dict[str, tuple[float | None, float]]) -> tuple[dict[str, float], str, str]:
    """(cost per step of each, its unit, the cheaper): by energy where every trial read some, else time."""
    by_energy = all(j for j, _ in costs.values())
    unit = "J/step" if by_energy else "s/step"
    measured = {p: (j if by_energy else sec) for p, (j, sec) in costs.items()}
    return measured, unit, min(measured, key=measured.get)  # type: ignore[arg-type]
