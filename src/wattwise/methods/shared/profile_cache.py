"""The one keyed profile cache: a JSON file per measured set-up, read back instead of measuring again.

The power tuner and the batch-size finder both measure at fit start and cache what they measured,
keyed by everything the figures depend on (the card, the net's structure, the input shape, ...).
This module is that cache, once: the file name (readable parts plus a digest of the whole key),
the format stamp, the key check, the atomic write, and "unreadable: one warning, measure again".
Each method keeps only its key and the checks of its own records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wattwise.utils.atomic_write import atomic_write
from wattwise.utils.errors import OutputError


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


def slug(text: str, default: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or default


def keyed_path(profile_dir: Path | None, key: dict[str, Any], *name_parts: str) -> Path | None:
    """`<parts>-<digest of the whole key>.json` in `profile_dir`; None without a cache."""
    if profile_dir is None:
        return None
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Path(profile_dir) / f"{'-'.join([*name_parts, digest])}.json"


def read_records(
    path: Path | None,
    stamp: tuple[str, int],
    what: str,
    log: logging.Logger,
    key: dict[str, Any] | None = None,
    check: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]] | None:
    """The cached records, or None: missing, or (one warning) unreadable, of another format or key,
    or refused by `check` (which raises ValueError/KeyError/TypeError). JSON only: nothing runs."""
    if path is None or not path.is_file():
        return None
    field, version = stamp
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        if data.get(field) != version:
            raise ValueError(f"format {data.get(field)}, not {version}")
        if key is not None and data.get("key") != key:
            raise ValueError("its key differs from this run's")
        records = data["measurements"]
        if not isinstance(records, list):
            raise TypeError("measurements is not a list")
        if check is not None:
            check(records)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ArithmeticError, RecursionError) as err:
        log.warning("Ignoring the unreadable %s %s (%s); measuring again.", what, path, err)
        return None
    return records


def write_records(
    path: Path | None,
    stamp: tuple[str, int],
    what: str,
    log: logging.Logger,
    key: dict[str, Any] | None,
    records: Sequence[dict[str, Any]],
) -> None:
    """Write the profile atomically (no half-written file is ever left); a failure only warns."""
    if path is None:
        return
    field, version = stamp
    data = {
        field: version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "key": key,
        "measurements": list(records),
    }
    try:
        atomic_write(path, (json.dumps(data, indent=2) + "\n").encode(), what)
    except OutputError as err:
        log.warning("Could not cache the %s: %s", what, err)
