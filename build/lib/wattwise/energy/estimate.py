"""A documented energy *estimate* for machines without a readable hardware counter.

Why: on a laptop, a VM or CI there is often no NVML counter and no RAPL access.
Reporting nothing would hide the cost; reporting a guess as a measurement would
mislead. So we estimate from what the OS does tell us, label it `estimate`, and
say how it was made:

    energy_J = cpu_W_per_core * (CPU-seconds used by this process)
             + gpu_W          * (wall seconds, only if the run uses a GPU we cannot read)
             + base_W         * (wall seconds)

CPU-seconds (`time.process_time`, all threads of the process) rise with the work
actually done, so a cheaper model or fewer epochs show up as fewer joules even
without a counter. The default 12 W per busy core is a round figure for a
server core under load (a 16-core, 200 W TDP part is ~12.5 W per core); set your
own in `conf/energy/*.yaml`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class EstimateModel:
    """Power figures the estimate multiplies by; all in watts."""

    cpu_W_per_core: float = 12.0
    gpu_W: float = 300.0
    base_W: float = 0.0

    def __post_init__(self) -> None:
        for name in ("cpu_W_per_core", "gpu_W", "base_W"):
            if getattr(self, name) < 0:
                raise ValueError(f"energy.estimate.{name} must be >= 0, got {getattr(self, name)}")

    def describe(self, uses_gpu: bool) -> str:
        parts = [f"{self.cpu_W_per_core:g} W x process CPU-seconds"]
        if uses_gpu:
            parts.append(f"{self.gpu_W:g} W x GPU wall seconds")
        if self.base_W:
            parts.append(f"{self.base_W:g} W x wall seconds")
        return " + ".join(parts)


@dataclass
class EstimateState:
    """Clock readings at the start of a window."""

    wall_s: float
    cpu_s: float


def read_clocks() -> EstimateState:
    return EstimateState(wall_s=time.perf_counter(), cpu_s=time.process_time())
