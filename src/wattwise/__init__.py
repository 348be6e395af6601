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

# option -> class, one per registered method (tests/test_api.py checks it against the registry)
METHOD_CLASSES = {
    "Amp": "wattwise.methods.amp.callback",
    "BatchSize": "wattwise.methods.batch_size.callback",
    "CarbonAware": "wattwise.methods.carbon_aware.callback",
    "DataCache": "wattwise.methods.data_cache.callback",
    "Distill": "wattwise.methods.distill.callback",
    "EarlyStop": "wattwise.methods.early_stop.callback",
    "Power": "wattwise.methods.power.callback",
    "Prune": "wattwise.methods.prune.callback",
    "Qat": "wattwise.methods.qat.callback",
}
_API = {
    "energy_callbacks": "wattwise.api",
    "figures": "wattwise.api",
    "build_method": "wattwise.api",
    "FiguresToLoggers": "wattwise.api",
    "EnergyMonitor": "wattwise.energy.monitor",
}
__all__ = [*_API, *METHOD_CLASSES]


def __getattr__(name: str) -> Any:
    module = METHOD_CLASSES.get(name) or _API.get(name)
    if module is None:
        raise AttributeError(f"module 'wattwise' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
