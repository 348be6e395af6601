"""The profile cache: one JSON file per GPU model, net, input shape, batch size, precision, world size."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wattwise.energy.monitor import batch_size_of
from wattwise.utils.atomic_write import atomic_write
from wattwise.utils.errors import OutputError

log = logging.getLogger("wattwise.methods.power.callback")  # one logger for the whole method

PROFILE_FORMAT = 2  # 2: one record per measuring window (block), with its batch count


def net_signature(module: Any) -> str:
    """A short hash of the net's structure: module types and parameter names and shapes.

    Shapes are metadata: computing this never touches the device.
    """
    h = hashlib.sha1()
    for m in module.modules():
        h.update(type(m).__name__.encode())
    for name, p in module.named_parameters():
        h.update(f"{name}:{tuple(p.shape)};".encode())
    return h.hexdigest()[:12]


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "gpu"


def profile_path(profile_dir: Path | None, key: dict[str, Any]) -> Path | None:
    """The cache file for `key` (readable names, a digest of the whole key); None without a cache."""
    if profile_dir is None:
        return None
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    gpu, precision = _slug(key["gpu"]), _slug(key["precision"])
    return profile_dir / f"{gpu}-net{key['net']}-bs{key['batch_size']}-{precision}-{digest}.json"


def load_cached(path: Path | None) -> list[dict[str, float]] | None:
    """The cached measuring windows, or None (missing, unreadable, an older format: profile again)."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        if data.get("wattwise_profile_format") != PROFILE_FORMAT:
            raise ValueError(f"format {data.get('wattwise_profile_format')}, not {PROFILE_FORMAT}")
        measurements = data["measurements"]
        fields = ("power_limit", "energy", "time", "steps")
        if not measurements or not all(0 < m[f] < math.inf for m in measurements for f in fields):
            raise ValueError("empty, non-positive or infinite measurements")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ArithmeticError, RecursionError) as err:
        log.warning("Ignoring the unreadable power profile %s (%s); profiling again.", path, err)
        return None
    return measurements


def save_profile(path: Path | None, key: dict[str, Any] | None, measurements: list[dict[str, float]]) -> None:
    """Write the profile atomically (a temporary file, then a rename); a failure only warns."""
    if path is None:
        return
    data = {
        "wattwise_profile_format": PROFILE_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "key": key,
        "measurements": measurements,
    }
    try:  # no half-written file is ever left in profile_dir
        atomic_write(path, (json.dumps(data, indent=2) + "\n").encode(), "the power profile")
    except OutputError as err:
        log.warning("Could not cache the power profile: %s", err)
