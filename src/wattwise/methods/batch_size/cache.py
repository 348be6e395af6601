"""The batch-size profile cache: one JSON file per device, net, input shape, precision, world size,
candidate list, step counts, optimizer, meter source and (a joint profile) the power-limit grid; a
repeat run with the same key measures nothing. Written atomically (utils.atomic_write); an
unreadable file warns and is measured again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wattwise.methods.batch_size.measure import CandidateMeasurement
from wattwise.utils.atomic_write import atomic_write
from wattwise.utils.errors import OutputError

log = logging.getLogger("wattwise.methods.batch_size.callback")

PROFILE_FORMAT = 1


def profile_key(
    *,
    device: str,
    net: str,
    input_shape: list[int] | None,
    precision: str,
    world_size: int,
    candidates: list[int],
    warmup_steps: int,
    measure_steps: int,
    optimizers: list[str],
    meter_source: str,
    limits_W: list[int] | None = None,
) -> dict[str, Any]:
    """Everything the measurements depend on (the selector and memory limit are not: they are re-applied).

    `limits_W`: the power tuner's grid, for a joint profile (every size at every limit); absent otherwise.
    """
    joint = {"limits_W": list(limits_W)} if limits_W else {}
    return {
        **joint,
        "device": device,
        "net": net,
        "input_shape": input_shape,
        "precision": precision,
        "world_size": world_size,
        "candidates": list(candidates),
        "warmup_steps": warmup_steps,
        "measure_steps": measure_steps,
        "optimizers": list(optimizers),
        "meter_source": meter_source,
    }


def profile_path(profile_dir: Path | None, key: dict[str, Any]) -> Path | None:
    if profile_dir is None:
        return None
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    device = re.sub(r"[^A-Za-z0-9]+", "-", key["device"]).strip("-") or "device"
    return profile_dir / f"{device}-net{key['net']}-ws{key['world_size']}-{digest}.json"


def load_cached(path: Path | None, key: dict[str, Any]) -> list[CandidateMeasurement] | None:
    """The cached measurements, or None (missing; unreadable or another key: warn and measure again)."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        if data.get("wattwise_batch_profile_format") != PROFILE_FORMAT:
            raise ValueError(f"format {data.get('wattwise_batch_profile_format')}, not {PROFILE_FORMAT}")
        if data.get("key") != key:
            raise ValueError("its key differs from this run's")
        out = [CandidateMeasurement.from_record(r) for r in data["measurements"]]
        limits = key.get("limits_W") or [None]
        if [(m.limit_W, m.batch_size) for m in out] != [
            (w, b) for w in limits for b in sorted(key["candidates"])
        ]:
            raise ValueError("its measurements do not cover the candidates")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ArithmeticError, RecursionError) as err:
        log.warning("Ignoring the unreadable batch-size profile %s (%s); measuring again.", path, err)
        return None
    return out


def save_profile(path: Path | None, key: dict[str, Any], measurements: list[CandidateMeasurement]) -> None:
    """Write the profile atomically; a failure only warns (the run needs no cache)."""
    if path is None:
        return
    data = {
        "wattwise_batch_profile_format": PROFILE_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "key": key,
        "measurements": [m.as_record() for m in measurements],
    }
    try:
        atomic_write(path, (json.dumps(data, indent=2) + "\n").encode(), "the batch-size profile")
    except OutputError as err:
        log.warning("Could not cache the batch-size profile: %s", err)
