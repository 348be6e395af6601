"""Run and sweep directories: unique names, and one line when they cannot be created.

`conf/hydra/default.yaml` names a run `outputs/runs/<date>/${wattwise.run_stamp:}`: the start
time with milliseconds and the process id, e.g. `10-34-24.512-4567`. Still read and sorted as a
time (`ls | sort` puts the newest last), and two processes never share it: the pid separates runs
started in the same millisecond on one machine, the milliseconds separate machines or containers
that share the output folder (where every container's first process may be pid 1).

The stamp is taken once per process, so every place Hydra resolves the run dir agrees, and it is
cached in the config like Hydra's own `${now:...}`, so a sweep's jobs (joblib workers, submitit
jobs, a requeued submitit job) all see the sweep dir its launcher created.

`RunDirCheck` (a Hydra callback, conf/hydra/default.yaml) creates the run or sweep dir before
Hydra does and stops in one line naming it when it cannot be created or written (a read-only
mount, no permission, a full disk), where Hydra would end in a traceback.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from wattwise.utils.errors import exit_with_error

RESOLVER = "wattwise.run_stamp"
_STARTED = datetime.now()


def run_stamp(started: datetime | None = None, pid: int | None = None) -> str:
    """`HH-MM-SS.mmm-<pid>` for this process (or for the given start time and pid)."""
    started = started or _STARTED
    pid = os.getpid() if pid is None else pid
    return f"{started:%H-%M-%S}.{started.microsecond // 1000:03d}-{pid}"


def register_run_dir_resolvers() -> None:
    """Make `${wattwise.run_stamp:}` available to the configs (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, lambda: run_stamp(), use_cache=True)


def check_writable_dir(path: str | Path, key: str) -> None:
    """Create `path` (and parents) and check it can be written; one line and exit 1 when not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        exit_with_error(
            f"{key}: cannot create the output folder {path}: {err.strerror or err}. "
            f"Choose a writable folder, e.g. {key}=/tmp/wattwise-run",
            code=1,
        )
    if not os.access(path, os.W_OK | os.X_OK):
        exit_with_error(
            f"{key}: the output folder {path} is not writable. "
            f"Fix its permissions or choose another, e.g. {key}=/tmp/wattwise-run",
            code=1,
        )


class RunDirCheck(Callback):
    """Checks the run (or sweep) dir before Hydra writes `.hydra/` into it (see the module doc)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable_dir(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable_dir(config.hydra.sweep.dir, "hydra.sweep.dir")
