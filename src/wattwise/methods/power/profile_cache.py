"""The power profile's key and records: one JSON file per GPU model, net, input shape, batch size,
precision and world size, through the shared keyed cache (methods/shared/profile_cache.py)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from wattwise.energy.monitor import batch_size_of
from wattwise.methods.shared.profile_cache import keyed_path, read_records, slug, write_records

log = logging.getLogger("wattwise.methods.power.callback")  # one logger for the whole method

PROFILE_FORMAT = 2  # 2: one record per measuring window (block), with its batch count
STAMP = ("wattwise_profile_format", PROFILE_FORMAT)


def profile_key(
    *,
    gpu: str,
    net: str,
    batch: Any,
    precision: str,
    world_size: int,
    pl_step_W: int,
    limits_mW: tuple[int, int],
) -> dict[str, Any]:
    """Everything a profile depends on; a run with another key profiles again."""
    first = batch
    while isinstance(first, list | tuple | dict) and first:
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    input_shape = list(first.shape[1:]) if hasattr(first, "shape") else None
    return {
        "gpu": gpu,
        "net": net,
        "input_shape": input_shape,
        "batch_size": batch_size_of(batch),
        "precision": precision,
        "world_size": world_size,
        "pl_step_W": pl_step_W,
        "limits_mW": list(limits_mW),
    }


def profile_path(profile_dir: Path | None, key: dict[str, Any]) -> Path | None:
    """The cache file for `key` (readable names, a digest of the whole key); None without a cache."""
    gpu, precision = slug(key["gpu"], "gpu"), slug(key["precision"], "gpu")
    return keyed_path(profile_dir, key, gpu, f"net{key['net']}", f"bs{key['batch_size']}", precision)


def _check(measurements: list[dict[str, Any]]) -> None:
    fields = ("power_limit", "energy", "time", "steps")
    if not measurements or not all(0 < m[f] < math.inf for m in measurements for f in fields):
        raise ValueError("empty, non-positive or infinite measurements")


def load_cached(path: Path | None) -> list[dict[str, float]] | None:
    """The cached measuring windows, or None (missing, unreadable, an older format: profile again)."""
    return read_records(path, STAMP, "power profile", log, check=_check)


def save_profile(path: Path | None, key: dict[str, Any] | None, measurements: list[dict[str, float]]) -> None:
    """Write the profile atomically (shared/profile_cache.py); a failure only warns."""
    write_records(path, STAMP, "power profile", log, key, measurements)
