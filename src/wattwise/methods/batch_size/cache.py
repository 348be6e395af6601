"""The batch-size profile cache: one JSON file per device, net, input shape, precision, world size,
candidate list, step counts, optimizer, meter source and (a joint profile) the power-limit grid; a
repeat run with the same key measures nothing. Stored through the shared keyed cache
(methods/shared/profile_cache.py): written atomically; an unreadable file warns and is measured again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from wattwise.methods.batch_size.measure import CandidateMeasurement
from wattwise.methods.shared.profile_cache import keyed_path, read_records, slug, write_records

log = logging.getLogger("wattwise.methods.batch_size.callback")

PROFILE_FORMAT = 1
STAMP = ("wattwise_batch_profile_format", PROFILE_FORMAT)


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
    device = slug(key["device"], "device")
    return keyed_path(profile_dir, key, device, f"net{key['net']}", f"ws{key['world_size']}")


def load_cached(path: Path | None, key: dict[str, Any]) -> list[CandidateMeasurement] | None:
    """The cached measurements, or None (missing; unreadable or another key: warn and measure again)."""
    limits = key.get("limits_W") or [None]
    expected = [(w, b) for w in limits for b in sorted(key["candidates"])]

    def check(records: list[dict[str, Any]]) -> None:
        got = [CandidateMeasurement.from_record(r) for r in records]
        if [(m.limit_W, m.batch_size) for m in got] != expected:
            raise ValueError("its measurements do not cover the candidates")

    records = read_records(path, STAMP, "batch-size profile", log, key=key, check=check)
    return None if records is None else [CandidateMeasurement.from_record(r) for r in records]


def save_profile(path: Path | None, key: dict[str, Any], measurements: list[CandidateMeasurement]) -> None:
    """Write the profile atomically (shared/profile_cache.py); a failure only warns."""
    write_records(path, STAMP, "batch-size profile", log, key, [m.as_record() for m in measurements])
