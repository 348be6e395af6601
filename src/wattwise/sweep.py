"""Helpers for sweeps: Optuna's sqlite storage and the launcher a job runs under.

- `sqlite_url(path)`: referenced from conf/hparams_search/energy_pareto.yaml as the
  sweeper's `storage`; creates the folder (sqlite cannot) and returns an absolute URL
  (a relative path is taken from the directory you launch from, like `outputs/`).
- `direction(monitor, mode)`: Optuna's direction for the monitored metric (energy_pareto.yaml's
  first objective), `maximize` or `minimize`, from `mode` or else the metric's name. Optuna needs
  it when the study is made, before any trial, so `monitor: auto` (chosen inside a trial) cannot
  decide it: a one-line error says to name the monitor.
- `in_multirun()`: whether this run is a job of a sweep.
- `launcher_info()`: recorded in each run's summary.json; warns once per job when jobs
  run in parallel (joblib with n_jobs > 1, submitit local), because jobs on one machine
  share its power and a hardware counter then counts all of them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARALLEL_WARNING = (
    "%d jobs run in parallel on one machine (hydra/launcher=%s). A hardware energy counter (GPU NVML, "
    "CPU RAPL) then also counts the other jobs' draw, and even estimates shift as jobs compete for cores: "
    "compare energy only between sequential runs (hydra/launcher=basic, the default)."
)


def sqlite_url(path: str) -> str:
    """`sqlite:///<absolute path>` for Optuna, creating the parent folder."""
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def direction(monitor: str = "auto", mode: str = "auto") -> str:
    """`maximize` or `minimize` for the monitored metric (see module doc); ConfigError in one line."""
    from wattwise.utils.errors import ConfigError
    from wattwise.utils.monitor import mode_for

    if mode not in ("min", "max"):
        if mode != "auto":
            raise ConfigError(f"mode must be min, max or auto, got {mode!r}")
        if monitor in ("auto", "", None):
            raise ConfigError(
                "hparams_search: Optuna needs the metric's direction before the first trial, and "
                "monitor=auto is chosen only inside one: set monitor=<metric> (e.g. val/loss), mode=min|max"
            )
        guessed = mode_for(str(monitor))
        if guessed is None:
            raise ConfigError(
                f"hparams_search: cannot tell whether {monitor} should rise or fall: set mode=min or mode=max"
            )
        mode = guessed
    return "maximize" if mode == "max" else "minimize"


def launcher_info() -> dict[str, Any] | None:
    """{"launcher": name, "parallel_jobs": n} for a multirun job, None for a single run."""
    if not in_multirun():
        return None
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    launcher = hc.get("launcher") or {}
    target = str(launcher.get("_target_", ""))
    name = target.rsplit(".", 1)[-1].removesuffix("Launcher").lower() or "unknown"
    parallel = 1
    if "joblib" in target.lower():  # joblib: n_jobs workers, -1 = one per CPU
        n_jobs = launcher.get("n_jobs", -1)
        parallel = int(n_jobs) if n_jobs is not None and int(n_jobs) > 0 else (os.cpu_count() or 1)
    elif target.endswith("submitit_launcher.LocalLauncher"):  # submitit local: all jobs at once
        parallel = int(launcher.get("array_parallelism") or 1)
    # basic: one job after the other; submitit SLURM: each job in its own allocation
    if parallel > 1:
        log.warning(PARALLEL_WARNING, parallel, name)
    return {"launcher": name, "parallel_jobs": parallel}


def in_multirun() -> bool:
    """True inside a job of a Hydra sweep (`-m`, hparams_search)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().mode) == "RunMode.MULTIRUN"
    except (ImportError, ValueError):
        return False
