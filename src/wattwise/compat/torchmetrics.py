"""torchmetrics' private names wattwise uses (checked against torchmetrics 1.9).

- `Metric._update_count`: the batch-size finder checks its trial steps left no metric updated.
"""

from __future__ import annotations

from typing import Any

CHECKED_WITH = "torchmetrics>=1.9"
PRIVATE_NAMES = ("torchmetrics.Metric._update_count",)  # instance attribute: see tests/test_compat.py
INSTANCE_ATTRIBUTES = {"_update_count"}


def update_count(metric: Any) -> int:
    """How many times `update` ran since the last reset."""
    return int(getattr(metric, "_update_count", 0))
