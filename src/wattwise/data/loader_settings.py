"""DataLoader settings chosen for the hardware: `auto` values resolved by stated rules, each with its reason.

`choose_loader_settings` is pure (every machine fact is an argument) so each rule is tested with
pinned inputs. The rules, for `data.<key>: auto`:

- `num_workers`: 0 when the data already sits in memory as tensors (every bundled datamodule):
  a worker process only adds its start-up and a pickled copy of every batch sent back, for
  indexing the main process does in microseconds. For data decoded per sample (files, images
  decoded on the fly), workers overlap decoding with training: on a GPU run up to 8, one core
  left for the main process (min(8, cores - 1)); on a CPU-only run at most 2 (min(2, cores - 1)),
  because there the workers take cores from torch's own training threads.
- `pin_memory`: on when training on CUDA (page-locked batches let the host-to-device copy run
  asynchronously); off otherwise, where there is no copy to speed up (an explicit `true` without
  CUDA is turned off too, and says so).
- `persistent_workers`: on whenever there are workers, so they are not forked again each epoch.
- `prefetch_factor`: torch's default, 2 batches per worker, when there are workers (each worker
  already holds its next batches ahead); null with 0 workers, which the DataLoader requires.

An explicit value wins (reason: "set by data.<key>"); an impossible one is a one-line ConfigError
naming `data.<key>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wattwise.utils.errors import ConfigError, require_int

AUTO = "auto"
MAX_WORKERS_GPU = 8
MAX_WORKERS_CPU = 2
PREFETCH_DEFAULT = 2  # torch's own default


@dataclass(frozen=True)
class LoaderSettings:
    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None
    reasons: list[str] = field(default_factory=list)

    def dataloader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "prefetch_factor": self.prefetch_factor,
        }

    def describe(self) -> str:
        return (
            f"num_workers={self.num_workers}, pin_memory={self.pin_memory}, "
            f"persistent_workers={self.persistent_workers}, prefetch_factor={self.prefetch_factor} "
            f"({'; '.join(self.reasons)})"
        )

    def summary_figures(self) -> dict[str, Any]:
        return {f"data/{k}": v for k, v in self.dataloader_kwargs().items()}


def _check_flag(key: str, value: Any) -> None:
    if value != AUTO and not isinstance(value, bool):
        raise ConfigError(f"data.{key} must be auto, true or false, got {value!r}")


def _workers(
    num_workers: int | str, data_in_memory: bool, on_cuda: bool, cores: int, reasons: list[str]
) -> int:
    """The worker count (rules in the module doc); its reason appended to `reasons`."""
    if num_workers != AUTO:
        reasons.append("num_workers set by data.num_workers")
        return int(num_workers)
    if data_in_memory:
        reasons.append(
            "0 workers: the data is in memory as tensors (workers would only add start-up and IPC)"
        )
        return 0
    if on_cuda:
        workers = max(0, min(MAX_WORKERS_GPU, cores - 1))
        reasons.append(
            f"{workers} workers: decoded per sample, GPU run, {cores} cores (one left for training)"
        )
        return workers
    workers = max(0, min(MAX_WORKERS_CPU, cores - 1))
    reasons.append(f"{workers} workers: decoded per sample, CPU run, {cores} cores (for training threads)")
    return workers


def _pinned(pin_memory: bool | str, on_cuda: bool, accelerator: str, reasons: list[str]) -> bool:
    """Whether batches are pinned (only a CUDA run has anything to copy to); its reason appended."""
    if pin_memory == AUTO:
        reasons.append("pinned: training on CUDA" if on_cuda else f"not pinned: training on {accelerator}")
        return on_cuda
    if pin_memory and not on_cuda:
        reasons.append(
            f"data.pin_memory=true, but training on {accelerator}: not pinned (nothing to copy to)"
        )
        return False
    reasons.append("pin_memory set by data.pin_memory")
    return bool(pin_memory)


def choose_loader_settings(
    *,
    num_workers: int | str = AUTO,
    pin_memory: bool | str = AUTO,
    persistent_workers: bool | str = AUTO,
    prefetch_factor: int | str | None = AUTO,
    data_in_memory: bool,
    accelerator: str,
    cores: int,
) -> LoaderSettings:
    """The loader settings for these `data.*` values on this hardware (see the module doc for the rules)."""
    if num_workers != AUTO:
        require_int("data.num_workers", num_workers, 0)
    _check_flag("pin_memory", pin_memory)
    _check_flag("persistent_workers", persistent_workers)
    if prefetch_factor not in (AUTO, None):
        require_int("data.prefetch_factor", prefetch_factor, 1, allow_none=True)
    on_cuda = accelerator == "cuda"
    reasons: list[str] = []
    workers = _workers(num_workers, data_in_memory, on_cuda, cores, reasons)
    pin = _pinned(pin_memory, on_cuda, accelerator, reasons)

    if persistent_workers == AUTO:
        persistent = workers > 0
    else:
        if persistent_workers and workers == 0:
            raise ConfigError(
                "data.persistent_workers=true needs data.num_workers > 0 (there are no workers)"
            )
        persistent = bool(persistent_workers)
        reasons.append("persistent_workers set by data.persistent_workers")

    if prefetch_factor == AUTO:
        prefetch = PREFETCH_DEFAULT if workers > 0 else None
    else:
        if prefetch_factor is not None and workers == 0:
            raise ConfigError(
                f"data.prefetch_factor={prefetch_factor} needs data.num_workers > 0 (set it to auto or null)"
            )
        prefetch = prefetch_factor if workers > 0 else None
        reasons.append("prefetch_factor set by data.prefetch_factor")
    return LoaderSettings(workers, pin, persistent, prefetch, reasons)
