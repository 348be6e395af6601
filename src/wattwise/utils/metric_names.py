"""What a metric's name says about how to show it: an accuracy is a fraction shown in %, the rest as is.

Shared by `compare` (its table, CSV, plot and W&B table) and the energy report's plot, so a loss is
never drawn or printed as a percentage and an accuracy always is.
"""

from __future__ import annotations

import re


def is_accuracy(name: str) -> bool:
    """An accuracy: `test/acc`, `val/top5_acc`, `test/accuracy`; not `val/loss` or `val/accel_error`."""
    words = re.split(r"[_\-@.]", str(name).rsplit("/", 1)[-1].lower())
    return any(w.rstrip("0123456789") in ("acc", "accuracy") for w in words)
