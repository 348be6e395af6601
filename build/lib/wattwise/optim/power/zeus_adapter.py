"""The one place that talks to Zeus for power-limit tuning (checked with zeus 0.16.0).

Everything Zeus-specific lives here, including the internals the tuner relies on and that a
Zeus release may change:

- `zeus.device.get_gpus()` and its `GPUs` methods (`get_name`, limit constraints, get/set of
  the power limit and persistence mode), wrapped by `Gpu`;
- `GlobalPowerLimitOptimizer`'s state machine (`state` is `Ready`/`Warmup`/`Profiling`/`Done`,
  `state.current_power_limit`, `state.optimal_power_limit`, `current_power_limit`,
  `measurements`), its window names `__GlobalPowerLimitOptimizer_<W>` and the `atexit`
  module it registers its exit hook through, wrapped by `Optimizer`;
- the optimum selectors and `PowerLimitMeasurement`;
- Zeus's exceptions, translated into this module's `GpuError` / `NoPermission` /
  `MeasurementRejected`, so no other module needs to import Zeus to catch them.

Zeus is imported inside the functions: importing wattwise (the registry loads every method's
class) must not import Zeus or initialise NVML.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wattwise.utils.errors import ConfigError

ZEUS_VERSION_CHECKED = "0.16.0"
SELECTORS = ("energy", "time", "zeus_cost", "max_slowdown")


class GpuError(Exception):
    """The GPU refused a read or a change (Zeus's `ZeusBaseGPUError`, e.g. not supported)."""


class NoPermission(GpuError):
    """Not allowed to change the power limit or persistence mode (no SYS_ADMIN, no zeusd)."""


class MeasurementRejected(ValueError):
    """Zeus refused a profile window's measurement (pydantic validation: e.g. a window read 0 J)."""


def _translate(err: BaseException) -> BaseException | None:
    """Our exception for one of Zeus's, or None when `err` is not a GPU error."""
    from zeus.device.exception import ZeusBaseGPUError
    from zeus.device.gpu import ZeusGPUNoPermissionError

    if isinstance(err, ZeusGPUNoPermissionError):
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


def select(selector: Any, measurements: Sequence[dict[str, float]]) -> int:
    """The limit (W) `selector` picks from cached measurements (`power_limit`, `energy`, `time`)."""
    from zeus.optimizer.power_limit import PowerLimitMeasurement

    return int(selector.select([PowerLimitMeasurement(**m) for m in measurements]))


# ---- the GPU --------------------------------------------------------------------------------------
class Gpu:
    """One GPU, as Zeus's device layer sees it; limits in mW, as NVML reports them."""

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


# ---- Zeus's optimizer -------------------------------------------------------------------------------
class Optimizer:
    """Zeus's `GlobalPowerLimitOptimizer`, with the state the tuner reads and Zeus's errors translated."""

    def __init__(
        self,
        zeus_monitor: Any,
        selector: Any,
        wait_steps: int,
        warmup_steps: int,
        profile_steps: int,
        pl_step_W: int,
        profile_path: Path | None,
    ) -> None:
        """Create it: Zeus turns persistence mode on and sets the first limit (or the cached choice).

        Zeus registers an atexit hook that sets the MAXIMUM limit, which would undo the tuner's
        restore of the original one at exit: it is kept from being registered (the tuner's own
        hook restores the original instead).
        """
        import zeus.optimizer.power_limit as zpl
        from zeus.device.gpu import ZeusGPUNoPermissionError

        self._zpl = zpl
        self._monitor = zeus_monitor
        logging.getLogger("zeus.optimizer.power_limit").setLevel(logging.WARNING)  # the tuner logs changes
        real_atexit = zpl.atexit
        zpl.atexit = types.SimpleNamespace(register=lambda *args, **kwargs: None)
        try:
            self._plo = zpl.GlobalPowerLimitOptimizer(
                zeus_monitor,
                optimum_selector=selector,
                wait_steps=wait_steps,
                warmup_steps=warmup_steps,
                profile_steps=profile_steps,
                pl_step=pl_step_W,
                profile_path=profile_path,
            )
        except RuntimeError as err:  # Zeus wraps a refused persistence mode in a RuntimeError
            if isinstance(err.__cause__, ZeusGPUNoPermissionError) or "SYS_ADMIN" in str(err):
                raise NoPermission(str(err)) from err
            raise
        except Exception as err:
            ours = _translate(err)
            if ours is None:
                raise
            raise ours from err
        finally:
            zpl.atexit = real_atexit

    # state ------------------------------------------------------------------------------------
    @property
    def current_limit_mW(self) -> int:
        return int(self._plo.current_power_limit)

    @property
    def done(self) -> bool:
        return isinstance(self._plo.state, self._zpl.Done)

    @property
    def optimal_limit_mW(self) -> int:
        return int(self._plo.state.optimal_power_limit)

    def measurements(self) -> list[dict[str, float]]:
        """Each profiled limit's `power_limit` (W), `energy` (J) and `time` (s)."""
        return [dict(m.dict()) for m in self._plo.measurements]

    # steps ------------------------------------------------------------------------------------
    def _guarded(self, method: str) -> None:
        try:
            getattr(self._plo, method)()
        except ValueError as err:  # pydantic rejects a measurement, e.g. a window that read 0 J
            raise MeasurementRejected(str(err)) from err
        except Exception as err:
            ours = _translate(err)
            if ours is None:
                raise
            raise ours from err

    def on_step_begin(self) -> None:
        self._guarded("on_step_begin")

    def on_epoch_end(self) -> None:
        self._guarded("on_epoch_end")

    def cancel_window(self) -> None:
        """End the measuring window of a profile in progress without recording it."""
        state = self._plo.state
        if isinstance(state, self._zpl.Profiling):
            key = f"__GlobalPowerLimitOptimizer_{state.current_power_limit // 1000}"
            try:
                self._monitor.end_window(key, cancel=True)
            except ValueError:  # no such window open
                pass
