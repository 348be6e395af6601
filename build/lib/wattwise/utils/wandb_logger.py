"""A WandbLogger that never blocks or crashes a run for want of a key or a network.

Decision, made once before `wandb.init`:
- `mode` given in config, or `WANDB_MODE` set: respected as is.
- no API key (env `WANDB_API_KEY` or ~/.netrc): offline, with one warning.
- a key but the server unreachable within 3 s: offline, with one warning
  (W&B itself would block ~90 s and then raise CommError).
Offline runs land in `<run dir>/wandb/offline-run-*`; `wandb sync` uploads them later.
`mode` is passed per run (never `offline=True`, which leaks into later sweep jobs).
Group and name default to the Hydra sweep dir and the job's overrides, so one
sweep's runs share a W&B group and each run is named by what it changed.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from typing import Any
from urllib.parse import urlparse

from wattwise.sweep import in_multirun

log = logging.getLogger(__name__)


def _has_api_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, port: int, timeout_s: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def choose_mode(mode: str | None = None) -> str:
    """online, offline or disabled; see the module docstring."""
    if mode:
        return mode
    if env := os.environ.get("WANDB_MODE"):
        return env
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname or "api.wandb.ai", url.port or 443
    if not _has_api_key(host):
        log.warning("W&B: no API key found; logging offline to the run dir (upload later with `wandb sync`).")
        return "offline"
    if not _reachable(host, port):
        log.warning(
            "W&B: %s is unreachable; logging offline to the run dir (upload later with `wandb sync`).", host
        )
        return "offline"
    return "online"


def hydra_group_and_name() -> tuple[str | None, str | None]:
    """(group, name) from Hydra: the sweep dir for multirun jobs, the overrides as the name."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None, None
    name = hc.job.override_dirname or "defaults"
    group = str(hc.sweep.dir).replace(os.sep, "_") if in_multirun() else None
    return group, name


def make_wandb_logger(
    project: str = "wattwise",
    save_dir: str = ".",
    group: str | None = None,
    name: str | None = None,
    mode: str | None = None,
    tags: list[str] | None = None,
    **kwargs: Any,
) -> Any:
    from lightning.pytorch.loggers import WandbLogger

    auto_group, auto_name = hydra_group_and_name()
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        group=group or auto_group,
        name=name or auto_name,
        tags=list(tags or []),
        mode=choose_mode(mode),
        **kwargs,
    )
