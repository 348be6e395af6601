"""One module per dependency whose private names wattwise uses, and nothing else uses them.

Each module names the version it was checked against (`CHECKED_WITH`) and lists the private
names it reaches (`PRIVATE_NAMES`, dotted paths resolved by tests/test_compat.py against the
pinned version: the test fails the day an upgrade removes one). Code elsewhere calls the small
functions here, so an upgrade is checked and fixed in one file per dependency.
"""

from __future__ import annotations

import importlib
from typing import Any


def resolve(dotted: str) -> Any:
    """The object at `pkg.module.Attr.attr` (the longest importable module prefix, then attributes)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)
