"""wattwise: train with fewer joules, and measure them.

For your own Lightning project: `wattwise.energy_callbacks([...])` gives the energy monitor and
the methods in order with the Trainer arguments they need, `wattwise.figures(trainer)` the
run's figures; each method's class is importable under its option's name (`wattwise.Prune`,
`wattwise.EarlyStop`, ...). Imports are lazy: `import wattwise` loads no method.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "energy_callbacks": "wattwise.api",
    "figures": "wattwise.api",
    "build_method": "wattwise.api",
    "FiguresToLoggers": "wattwise.api",
    "EnergyMonitor": "wattwise.energy.monitor",
}
__all__ = list(_API)  # plus each registered method's class, by its option's name (`wattwise.Prune`)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name[:1].isupper():  # a method's class, from the registry: a new method needs no edit here
        from wattwise.methods.registry import method_classes

        for cls in method_classes().values():
            if cls.__name__ == name:
                return cls
    raise AttributeError(f"module 'wattwise' has no attribute {name!r}")
