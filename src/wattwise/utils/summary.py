"""`summary.json`: one file per run with its final figures, so runs compare offline.

Metric keys are flat and use the contract names (`test/acc`, `energy/total_J`, ...);
the other keys describe the run (status, chosen optim options, device, energy source).
The file is written even when a run fails, with `status: failed` and the error.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wattwise.utils.atomic_write import atomic_write
from wattwise.utils.errors import OutputError

SUMMARY_FILE = "summary.json"
log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars to floats; NaN/inf to None so the JSON stays standard."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves half a summary.

    Raises OutputError, naming the file, when it cannot be written (full disk, read-only dir).
    """
    data = {"written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_plain(dict(summary))}
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return atomic_write(Path(run_dir) / SUMMARY_FILE, text.encode(), "the run summary")


def save_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> OutputError | None:
    """`write_summary`, or, when the file cannot be written, the error after logging it in one line
    and the summary itself, so the figures still reach the terminal and the log."""
    try:
        log.info("Summary written to %s", write_summary(run_dir, summary))
        return None
    except OutputError as err:
        log.error("wattwise: error: %s", err)
        log.info("Summary (not saved): %s", json.dumps(_plain(dict(summary))))
        return err


def read_summary(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    return json.loads(path.read_text())
