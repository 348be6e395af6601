"""The run's energy meter: Zeus where it can read hardware, a labelled estimate elsewhere.

It mirrors Zeus's API on purpose (`begin(name)` / `end(name) -> reading`), so a
reader who knows Zeus knows this. The meter owns the run's only `ZeusMonitor`;
other parts (power-limit tuning) reach that monitor through `meter.zeus_monitor`
instead of opening a second one.

Sources, as reported in `energy/source`:
- `zeus-nvml`: the GPU's total-energy counter via Zeus (Volta and newer). CPU energy
  is added from RAPL when readable, otherwise it is not counted (`energy/cpu_J` null).
- `zeus-amdsmi`: the same for AMD GPUs.
- `zeus-rapl`: a CPU-only run whose package (and DRAM) energy Zeus read from RAPL.
- `estimate`: no counter covers what the run uses; see `energy/estimate.py`.
- `off`: energy not measured; only wall time.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from wattwise.energy.estimate import EstimateModel, EstimateState, read_clocks

log = logging.getLogger(__name__)

MeterMode = Literal["auto", "estimate", "off"]
METER_MODES = ("auto", "estimate", "off")


@dataclass(frozen=True)
class EnergyReading:
    """What one window cost. Joules are None where nothing was measured or estimated."""

    time_s: float
    gpu_J: float | None
    cpu_J: float | None

    @property
    def total_J(self) -> float | None:
        parts = [p for p in (self.gpu_J, self.cpu_J) if p is not None]
        return sum(parts) if parts else None


# Where Zeus looks for RAPL (zeus.device.cpu.rapl.rapl_is_available, zeus 0.16): on the host, or
# mounted into a container. Without either Zeus finds no CPU counter.
RAPL_DIRS = ("/sys/class/powercap/intel-rapl", "/zeus_sys/class/powercap/intel-rapl")


def _rapl_visible() -> bool:
    return any(os.path.exists(d) for d in RAPL_DIRS)


def _make_zeus_monitor(gpu_index: int | None) -> Any:
    """Build a ZeusMonitor for one GPU (or none), quieting Zeus's start-up chatter; None where
    Zeus could measure nothing: no GPU to read and no RAPL directory for the CPU.

    Importing Zeus costs about a second of CPU (zeus.monitor imports scipy.signal), which a
    CPU-only run without RAPL would pay only to learn that its energy is the estimate.
    Zeus logs at INFO that NVML/amdsmi could not be initialised on machines without
    them; we report the outcome ourselves in one line instead.
    """
    if gpu_index is None and not _rapl_visible():
        return None
    zeus_logger = logging.getLogger("zeus")
    old_level = zeus_logger.level
    zeus_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from zeus.monitor import ZeusMonitor

            if gpu_index is not None:
                try:
                    return ZeusMonitor(gpu_indices=[gpu_index])
                except Exception as err:  # no NVML/amdsmi, or the index is not visible to Zeus
                    log.info("Zeus cannot read GPU %s (%s); GPU energy will be estimated.", gpu_index, err)
            return ZeusMonitor(gpu_indices=[])
    finally:
        zeus_logger.setLevel(old_level)


class EnergyMeter:
    """Named energy windows over the hardware the run uses.

    Args:
        mode: `auto` (Zeus counters where readable, else estimate), `estimate`
            (never touch Zeus) or `off` (time only).
        gpu_index: the CUDA device this process trains on, or None on CPU.
        estimate: the power model used when a counter is missing.
    """

    def __init__(
        self,
        mode: MeterMode = "auto",
        gpu_index: int | None = None,
        estimate: EstimateModel | None = None,
    ) -> None:
        if mode not in METER_MODES:
            raise ValueError(f"energy.mode must be one of {METER_MODES}, got {mode!r}")
        self.mode = mode
        self.gpu_index = gpu_index
        self.estimate = estimate or EstimateModel()
        self.zeus_monitor: Any = None
        self._zeus_gpu = False
        self._zeus_cpu = False
        if mode == "auto":
            self.zeus_monitor = _make_zeus_monitor(gpu_index)
            if self.zeus_monitor is not None:
                self._zeus_gpu = bool(self.zeus_monitor.gpu_indices)
                self._zeus_cpu = bool(self.zeus_monitor.cpu_indices)
        self.source = self._pick_source()
        self._open: dict[str, tuple[EstimateState, bool]] = {}

    def _pick_source(self) -> str:
        if self.mode == "off":
            return "off"
        uses_gpu = self.gpu_index is not None
        if uses_gpu and self._zeus_gpu:
            vendor = type(self.zeus_monitor.gpus).__name__
            return "zeus-amdsmi" if vendor.startswith("AMD") else "zeus-nvml"
        if not uses_gpu and self._zeus_cpu:
            return "zeus-rapl"
        return "estimate"

    @property
    def measured(self) -> bool:
        """True when the figures come from hardware counters, not the estimate."""
        return self.source.startswith("zeus-")

    def describe(self) -> str:
        """One line on how the figures are made, for the summary and the final table."""
        if self.source == "off":
            return "energy not measured (energy=off)"
        if self.source == "estimate":
            return "estimate: " + self.estimate.describe(self.gpu_index is not None)
        if self.source == "zeus-rapl":
            return "measured: CPU package + DRAM (RAPL) via Zeus"
        cpu = "CPU via RAPL" if self._zeus_cpu else "CPU not counted (no RAPL access)"
        return f"measured: GPU {self.gpu_index} energy counter via Zeus; {cpu}"

    def begin(self, key: str) -> None:
        use_zeus = self.measured
        if use_zeus:
            self.zeus_monitor.begin_window(key)
        self._open[key] = (read_clocks(), use_zeus)

    def end(self, key: str) -> EnergyReading:
        start, use_zeus = self._open.pop(key)
        if use_zeus:
            with warnings.catch_warnings():
                # A window shorter than the counter's update period reads 0 J; the joules then land
                # in the next window, so totals over back-to-back windows stay exact.
                warnings.filterwarnings("ignore", message=".*measured as zero.*")
                m = self.zeus_monitor.end_window(key)
            gpu_J = sum(m.gpu_energy.values()) if m.gpu_energy else None
            cpu_J = None
            if m.cpu_energy is not None:
                cpu_J = sum(m.cpu_energy.values()) + sum((m.dram_energy or {}).values())
            if self.source == "zeus-rapl":
                gpu_J = None
            return EnergyReading(time_s=m.time, gpu_J=gpu_J, cpu_J=cpu_J)
        now = read_clocks()
        wall_s = now.wall_s - start.wall_s
        if self.source == "off":
            return EnergyReading(time_s=wall_s, gpu_J=None, cpu_J=None)
        cpu_J = self.estimate.cpu_W_per_core * (now.cpu_s - start.cpu_s) + self.estimate.base_W * wall_s
        gpu_J = self.estimate.gpu_W * wall_s if self.gpu_index is not None else None
        return EnergyReading(time_s=wall_s, gpu_J=gpu_J, cpu_J=cpu_J)

    def is_open(self, key: str) -> bool:
        return key in self._open
