"""The one place that talks to Zeus for power-limit tuning (checked with zeus 0.16.0).

Everything Zeus-specific lives here, including the internals the tuner relies on and that a
Zeus release may change:

- `zeus.device.get_gpus()` and its `GPUs` methods (`get_name`, limit constraints, get/set of
  the power limit and persistence mode), wrapped by `Gpu`: direct NVML, which needs SYS_ADMIN;
- Zeus's daemon client (`zeus.utils.zeusd.ZeusdConfig` / `ZeusdClient`: `ZEUSD_SOCK_PATH` or
  `ZEUSD_HOST_PORT`, else the daemon's default socket `/run/zeusd/zeusd.sock`), wrapped by
  `ZeusdGpu`: a daemon running as root changes limits for a user without privileges;
- the monitor's measuring windows (`begin_window` / `end_window`), wrapped by `ZeusMeter`;
- the optimum selectors, `PowerLimitMeasurement` and `zeus.utils.metric.zeus_cost`;
- Zeus's exceptions, translated into this module's `GpuError` / `NoPermission` /
  `MeasurementRejected`, so no other module needs to import Zeus to catch them.

Zeus's own `GlobalPowerLimitOptimizer` is not used: its state machine tries a fixed grid down
from the maximum (which can miss the card's minimum), measures each limit once, and restarts a
limit from scratch at every epoch end or validation (`wattwise.methods.power.profiler` replaces it).

Zeus is imported inside the functions: importing wattwise (the registry loads every method's
class) must not import Zeus or initialise NVML.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattwise.utils.errors import ConfigError

ZEUS_VERSION_CHECKED = "0.16.0"
SELECTORS = ("energy", "time", "zeus_cost", "max_slowdown")
ZEUSD_DEFAULT_SOCKET = Path("/run/zeusd/zeusd.sock")  # where `zeusd serve` listens unless told

log = logging.getLogger("wattwise.methods.power.callback")  # one logger for the whole method


class GpuError(Exception):
    """The GPU refused a read or a change (Zeus's `ZeusBaseGPUError`, e.g. not supported)."""


class NoPermission(GpuError):
    """Not allowed to change the power limit or persistence mode (no SYS_ADMIN, no zeusd)."""


class MeasurementRejected(ValueError):
    """Zeus refused a profile window's measurement (pydantic validation: e.g. a window read 0 J)."""


def _translate(err: BaseException) -> BaseException | None:
    """Our exception for one of Zeus's, or None when `err` is not a GPU error."""
    from zeus.device.exception import ZeusBaseGPUError, ZeusdError
    from zeus.device.gpu import ZeusGPUNoPermissionError

    if isinstance(err, ZeusGPUNoPermissionError):
        return NoPermission(str(err))
    if isinstance(err, ZeusdError) and "permission" in str(err).lower():
        return NoPermission(str(err))
    if isinstance(err, ZeusBaseGPUError):
        return GpuError(str(err))
    return None


# ---- selectors ------------------------------------------------------------------------------------
def make_selector(name: str, eta: float = 0.5, max_slowdown: float = 1.1, world_size: int = 1) -> Any:
    """Zeus's optimum selector for `name`; `world_size` keeps `zeus_cost` unbiased under DDP."""
    from zeus.optimizer.power_limit import Energy, MaxSlowdownConstraint, Time, ZeusCost

    if name == "energy":
        return Energy()
    if name == "time":
        return Time()
    if name == "zeus_cost":
        return ZeusCost(eta_knob=eta, world_size=world_size)
    if name == "max_slowdown":
        return MaxSlowdownConstraint(factor=max_slowdown)
    raise ConfigError(f"callbacks.power.selector must be one of {', '.join(SELECTORS)}, got {name!r}")


@dataclass(frozen=True)
class Measurement:
    """One limit's figures for a selector: watts, joules, seconds (per batch or per window)."""

    limit_W: int
    energy_J: float
    time_s: float


def select(selector: Any, measurements: Sequence[Measurement]) -> int:
    """The limit (W) Zeus's `selector` picks; a non-positive figure (a window that read 0 J) is rejected."""
    from zeus.optimizer.power_limit import PowerLimitMeasurement

    try:
        zeus_measurements = [
            PowerLimitMeasurement(power_limit=m.limit_W, energy=m.energy_J, time=m.time_s)
            for m in measurements
        ]
    except ValueError as err:  # pydantic: energy and time must be > 0
        raise MeasurementRejected(str(err)) from err
    return int(selector.select(zeus_measurements))


def cost_of(selector: str, energy_J: float, time_s: float, *, eta: float, max_power_W: float) -> float:
    """The figure `selector` minimises (`zeus_cost` by Zeus's own formula); `max_slowdown` has none."""
    from zeus.utils.metric import zeus_cost

    if selector == "energy":
        return energy_J
    if selector == "time":
        return time_s
    if selector == "zeus_cost":
        return zeus_cost(energy_J, time_s, eta, max_power_W)
    raise ValueError(f"{selector} is a constraint, not a cost")


# ---- the GPU --------------------------------------------------------------------------------------
class Gpu:
    """One GPU, as Zeus's device layer sees it (NVML); limits in mW, as NVML reports them."""

    access = "nvml"
    route = ""

    def __init__(self, index: int) -> None:
        from zeus.device import get_gpus

        self.index = index
        self._gpus = get_gpus()

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._gpus, method)(self.index, *args)
        except Exception as err:
            ours = _translate(err)
            if ours is None:
                raise
            raise ours from err

    def name(self) -> str:
        return str(self._call("get_name"))

    def limit_constraints_mW(self) -> tuple[int, int]:
        low, high = self._call("get_power_management_limit_constraints")
        return int(low), int(high)

    def limit_mW(self) -> int:
        return int(self._call("get_power_management_limit"))

    def set_limit_mW(self, milliwatts: int) -> None:
        self._call("set_power_management_limit", milliwatts)

    def persistence(self) -> bool:
        return bool(self._call("get_persistence_mode"))

    def set_persistence(self, enabled: bool) -> None:
        self._call("set_persistence_mode", enabled)


# ---- the daemon ----------------------------------------------------------------------------------
def nvml_index(index: int) -> int:
    """The NVML (daemon-side) index of the `index`-th visible GPU: CUDA_VISIBLE_DEVICES renumbers them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v.strip() for v in visible.split(",")]
        if index < len(ids) and ids[index].isdigit():
            return int(ids[index])
    return index


class ZeusdGpu:
    """One GPU driven through Zeus's daemon client: every read and change goes to the daemon."""

    access = "zeusd"
    route = ""

    def __init__(self, index: int, client: Any) -> None:
        self.index = index
        self.device_id = nvml_index(index)
        self._client = client

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._client, method)(*args)
        except Exception as err:
            ours = _translate(err)
            if ours is None:
                raise
            raise ours from err

    def name(self) -> str:
        names = {g.id: g.name for g in self._client.gpus}
        return str(names.get(self.device_id, f"GPU {self.device_id}"))

    def limit_constraints_mW(self) -> tuple[int, int]:
        low, high = self._call("get_power_limit_constraints", [self.device_id])[self.device_id]
        return int(low), int(high)

    def limit_mW(self) -> int:
        return int(self._call("get_power_limit", [self.device_id])[self.device_id])

    def set_limit_mW(self, milliwatts: int) -> None:
        self._call("set_power_limit", [self.device_id], int(milliwatts), True)

    def persistence(self) -> bool:
        return bool(self._call("get_persistence_mode", [self.device_id])[self.device_id])

    def set_persistence(self, enabled: bool) -> None:
        self._call("set_persistence_mode", [self.device_id], bool(enabled), True)


def zeusd_client() -> tuple[Any | None, str]:
    """Zeus's client for a daemon that may change GPU limits, or None, with a line saying why not.

    Configured by `ZEUSD_SOCK_PATH` / `ZEUSD_HOST_PORT` (and `ZEUSD_TOKEN`) as in Zeus, else the
    default socket when it exists. Any failure means "no daemon": the caller falls back to NVML.
    """
    from zeus.exception import ZeusBaseError
    from zeus.utils.zeusd import ZeusdClient, ZeusdConfig

    config = ZeusdConfig.from_env()
    if config is None and ZEUSD_DEFAULT_SOCKET.exists():
        config = ZeusdConfig.uds(str(ZEUSD_DEFAULT_SOCKET), token=os.environ.get("ZEUSD_TOKEN"))
    if config is None:
        return None, "no zeusd configured (ZEUSD_SOCK_PATH / ZEUSD_HOST_PORT unset, no /run/zeusd/zeusd.sock)"
    try:
        client = ZeusdClient(config)
    except (ZeusBaseError, OSError) as err:
        return None, f"zeusd at {config.endpoint} unreachable: {err}"
    if not client.can_control_gpu:
        why = client.auth_error or "its gpu-control API is off or not granted"
        return None, f"zeusd at {config.endpoint} cannot change GPU limits ({why})"
    return client, f"zeusd at {config.endpoint}"


def open_gpu(index: int) -> Gpu | ZeusdGpu:
    """The way to change GPU `index`'s limit: Zeus's daemon where one is running, else NVML directly."""
    client, why = zeusd_client()
    gpu: Gpu | ZeusdGpu
    if client is not None:
        log.info("Power limits go through %s (no root needed).", why)
        gpu = ZeusdGpu(index, client)
    else:
        log.debug("Power limits go through NVML directly: %s.", why)
        gpu = Gpu(index)
    gpu.route = why  # how it got here, for the no-permission warning
    return gpu


# ---- measuring ----------------------------------------------------------------------------------
class ZeusMeter:
    """Measuring windows on the run's Zeus monitor; energy summed over its GPUs (one per process)."""

    def __init__(self, zeus_monitor: Any) -> None:
        self._monitor = zeus_monitor

    def begin(self, name: str) -> None:
        self._monitor.begin_window(name)

    def end(self, name: str) -> tuple[float, float]:
        measurement = self._monitor.end_window(name)
        return float(sum(measurement.gpu_energy.values())), float(measurement.time)

    def cancel(self, name: str) -> None:
        try:
            self._monitor.end_window(name, cancel=True)
        except ValueError:  # no such window open
            pass
