"""What a run offers its methods, resolved once: the energy monitor and the services methods provide.

A method never looks another callback up. It declares what it offers (`provides`, e.g. the power
tuner's `power_limits`) and what it would use (`uses`, e.g. the batch-size finder's joint search),
and the run hands each method a dict of the services it declared, plus the energy monitor
(`energy_monitor`) that every method may read. `resolve()` is called once by `assemble()` when
wattwise builds the run; in a plain `L.Trainer` each method resolves them from the Trainer's
callbacks at `setup`, through the same function.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ENERGY_MONITOR = "energy_monitor"  # the run's EnergyMonitor (measuring or not), or absent
POWER_LIMITS = "power_limits"  # a PowerLimitLender (methods/shared/power_access.py)


def resolve(callbacks: Iterable[Any]) -> dict[str, Any]:
    """The run's services: the first energy monitor and each service a method provides.

    A service two methods provide is an error in the method declarations, not in the user's run.
    """
    from wattwise.energy.monitor import EnergyMonitor

    services: dict[str, Any] = {}
    for cb in callbacks:
        if isinstance(cb, EnergyMonitor) and ENERGY_MONITOR not in services:
            services[ENERGY_MONITOR] = cb
        for name in getattr(cb, "provides", ()):
            if name in services:
                raise TypeError(f"two callbacks provide the service {name!r}: {services[name]!r} and {cb!r}")
            services[name] = cb.provide(name)
    return services


def bind(callbacks: Iterable[Any]) -> None:
    """Hand every energy method the services it declared (see module doc); idempotent."""
    callbacks = list(callbacks)
    services = resolve(callbacks)
    for cb in callbacks:
        if hasattr(cb, "bind_services"):
            cb.bind_services(services)
