"""`summary.json`: one file per run with its final figures, so runs compare offline.

Metric keys are flat and use the contract names (`test/acc`, `energy/total_J`, ...);
the other keys describe the run (status, chosen optim options, device, energy source).
The file is written even when a run fails, with `status: failed` and the error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"


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
    """Write atomically (temp file + rename) so a crash never leaves half a summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_plain(dict(summary))}
    path = run_dir / SUMMARY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_summary(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    return json.loads(path.read_text())
