"""How many CPU threads torch may use: never more than the cores other work leaves free.

torch starts one intra-op thread per core. When another process keeps a core busy, threads
that spin-wait for each other make a small run collapse: on a 2-core machine the default
digits run fit in 0.7 s with one thread, 8-14 s with two while one other CPU-bound process ran
(and the CPU-time energy estimate rose with the spinning). `cpu_threads: auto` therefore uses
the cores that are free right now: the cores this process may run on, less the busy ones
(a 0.1 s sample of /proc/stat while this process waits; the 1-minute load average where
/proc/stat cannot be read), at least 1.
An integer sets the count; `null` leaves torch's own choice (or OMP_NUM_THREADS) alone.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # None: left as torch had it
    reason: str


def choose_threads(
    setting: int | str | None, cores: int, busy_cores: float, torch_default: int, omp_env: str | None = None
) -> ThreadChoice:
    """The thread count for `cpu_threads=setting` (pure: every machine fact is an argument)."""
    if setting is None:
        return ThreadChoice(None, f"left to torch ({torch_default})")
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            from wattwise.utils.errors import ConfigError

            raise ConfigError(f"cpu_threads must be auto, null or a positive integer, got {setting!r}")
        return ThreadChoice(setting, "set by cpu_threads")
    if omp_env:
        return ThreadChoice(None, f"OMP_NUM_THREADS={omp_env} is set: left as it is")
    free = max(1, cores - round(busy_cores))
    return ThreadChoice(free, f"{cores} cores, {busy_cores:.1f} busy with other work")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _proc_stat_busy(interval_s: float = 0.1) -> float | None:
    """Busy cores over a short interval, from /proc/stat (Linux); None where it cannot be read."""

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    a = sample()
    time.sleep(interval_s)
    b = sample()
    if a is None or b is None or b[0] == a[0]:
        return None
    busy_fraction = 1.0 - (b[1] - a[1]) / (b[0] - a[0])
    return busy_fraction * (os.cpu_count() or 1)


def busy_cores() -> float:
    """Cores busy with other work now: a short sample (this process sleeps through it), else the load."""
    sample = _proc_stat_busy()
    if sample is not None:
        return sample
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def apply_threads(setting: int | str | None) -> ThreadChoice:
    """Choose and set torch's intra-op threads; logged once, returned for the run summary."""
    import torch

    needs_probe = setting == "auto" and not os.environ.get("OMP_NUM_THREADS")
    choice = choose_threads(
        setting,
        cores=available_cores(),
        busy_cores=busy_cores() if needs_probe else 0.0,
        torch_default=torch.get_num_threads(),
        omp_env=os.environ.get("OMP_NUM_THREADS"),
    )
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    log.info("CPU threads: %d (%s)", torch.get_num_threads(), choice.reason)
    return choice
