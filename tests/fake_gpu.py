"""A fake GPU for exercising real Zeus code without a GPU.

`FakeGPU` subclasses Zeus's own `GPU` ABC and `FakeGPUs` its `GPUs`; `install_fake_gpus`
puts them where Zeus looks (`zeus.device.gpu._gpus`) and makes Zeus's device sync a
no-op. The energy counter moves only when a test calls `advance(joules)` (or, with a
`power_model`, by watts x real seconds), so expected totals are exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from zeus.device.gpu.common import GPU, GPUs


class FakeGPU(GPU):
    """One GPU with a settable power limit (mW, as NVML) and an energy counter (mJ)."""

    def __init__(
        self,
        gpu_index: int = 0,
        name: str = "Fake H100",
        min_limit_W: int = 200,
        max_limit_W: int = 700,
        limit_W: int | None = None,
        power_model: Callable[[float], float] | None = None,
    ) -> None:
        super().__init__(gpu_index)
        self.name = name
        self.min_mW, self.max_mW = min_limit_W * 1000, max_limit_W * 1000
        self.limit_mW = (limit_W or max_limit_W) * 1000
        self.power_model = power_model  # watts drawn as a function of the limit in watts
        self.energy_mJ = 0.0
        self._last_t = time.monotonic()
        self.energy_reads: list[float] = []
        self.limit_history: list[int] = []
        self.persistence = False

    # test controls ------------------------------------------------------------------------
    def advance(self, joules: float) -> None:
        self.energy_mJ += joules * 1000.0

    def _tick(self) -> None:
        now = time.monotonic()
        if self.power_model is not None:
            self.energy_mJ += self.power_model(self.limit_mW / 1000.0) * (now - self._last_t) * 1000.0
        self._last_t = now

    # Zeus's GPU API -------------------------------------------------------------------------
    @property
    def supports_nonblocking_setters(self) -> bool:
        return False

    def get_name(self) -> str:
        return self.name

    def get_power_management_limit_constraints(self) -> tuple[int, int]:
        return self.min_mW, self.max_mW

    def get_power_management_limit(self) -> int:
        return self.limit_mW

    def set_power_management_limit(self, power_limit_mw: int, block: bool = True) -> None:
        self._tick()
        self.limit_mW = int(power_limit_mw)
        self.limit_history.append(self.limit_mW)

    def reset_power_management_limit(self, block: bool = True) -> None:
        self.set_power_management_limit(self.max_mW)

    def set_persistence_mode(self, enabled: bool, block: bool = True) -> None:
        self.persistence = enabled

    def get_persistence_mode(self) -> bool:
        return self.persistence

    def get_supported_memory_clocks(self) -> list[int]:
        return [1000]

    def set_memory_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int, block: bool = True) -> None:
        pass

    def reset_memory_locked_clocks(self, block: bool = True) -> None:
        pass

    def get_supported_graphics_clocks(self, memory_clock_mhz: int | None = None) -> list[int]:
        return [1500]

    def set_gpu_locked_clocks(self, min_clock_mhz: int, max_clock_mhz: int, block: bool = True) -> None:
        pass

    def reset_gpu_locked_clocks(self, block: bool = True) -> None:
        pass

    def get_average_power_usage(self) -> int:
        return self.get_instant_power_usage()

    def get_instant_power_usage(self) -> int:
        watts = self.power_model(self.limit_mW / 1000.0) if self.power_model else 0.0
        return int(watts * 1000)

    def get_average_memory_power_usage(self) -> int:
        return 0

    def supports_get_total_energy_consumption(self) -> bool:
        return True

    def get_total_energy_consumption(self) -> int:
        self._tick()
        value = int(round(self.energy_mJ))
        self.energy_reads.append(value / 1000.0)
        return value

    def get_gpu_temperature(self) -> int:
        return 50


class FakeGPUs(GPUs):
    def __init__(self, gpus: Sequence[FakeGPU], ensure_homogeneous: bool = False) -> None:
        self._gpus = list(gpus)

    def __del__(self) -> None:
        pass

    @property
    def gpus(self) -> Sequence[GPU]:
        return self._gpus


@contextmanager
def install_fake_gpus(gpus: Sequence[FakeGPU]) -> Iterator[FakeGPUs]:
    """Make Zeus see `gpus` (and skip its torch.cuda.synchronize) inside the block."""
    import zeus.device.gpu as zgpu
    import zeus.monitor.energy as zenergy

    fake = FakeGPUs(gpus)
    saved_gpus, saved_sync = zgpu._gpus, zenergy.sync_execution_fn
    zgpu._gpus = fake
    zenergy.sync_execution_fn = lambda *args, **kwargs: None
    try:
        yield fake
    finally:
        zgpu._gpus, zenergy.sync_execution_fn = saved_gpus, saved_sync


class BurnCallback:
    """Stands in for GPU work: advances fake GPU 0's counter by fixed joules per batch."""

    def __new__(cls, train_J: float = 1.0, val_J: float = 0.5, test_J: float = 0.25):
        import lightning as L
        import zeus.device.gpu as zgpu

        class _Burn(L.Callback):
            def _gpu(self) -> FakeGPU:
                return zgpu._gpus.gpus[0]

            def on_train_batch_end(self, *args, **kwargs) -> None:
                self._gpu().advance(train_J)

            def on_validation_batch_end(self, *args, **kwargs) -> None:
                self._gpu().advance(val_J)

            def on_test_batch_end(self, *args, **kwargs) -> None:
                self._gpu().advance(test_J)

        return _Burn()


def tune_fake_cards_only(scratch_dir: str) -> None:
    """In a DDP test's child process: let the power tuner change the fake card's limits (the
    suite's dry-run switch off), with no real zeusd reachable (none configured, a socket path
    in `scratch_dir` that nothing listens on)."""
    import os
    from pathlib import Path

    import wattwise.methods.shared.zeus_adapter as adapter

    os.environ.pop("WATTWISE_POWER_DRY_RUN", None)  # a fake card: nothing real can change
    for name in ("ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT"):
        os.environ.pop(name, None)
    adapter.ZEUSD_DEFAULT_SOCKET = Path(scratch_dir) / "no-zeusd.sock"
