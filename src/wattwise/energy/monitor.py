"""EnergyMonitor: the Lightning callback that owns the run's energy meter.

It observes and never changes training. It reads the counters once per epoch
boundary, never per step: on an H100 VM one NVML read cost ~4 ms and closing one
Zeus window and opening the next (two reads, two device syncs) 7.1 ms, so a read
per step would cost more than the 1% budget while one per epoch costs <1% of a
CIFAR-10 epoch.

The fit is covered by back-to-back *segments*: a boundary closes the open segment
and opens the next, so the totals add up to exactly what the counter moved between
fit start and fit end, with nothing double-counted. Boundaries:
- the first epoch's start (set-up and the sanity check count in the total only);
- each epoch's end: validation's end when validation closes the epoch (so the
  checkpoint saved right after it holds this epoch's energy), else the train epoch's end;
- the fit's end. A checkpoint saved mid-epoch closes a segment locally (no collective).

Under DDP each process measures its own device; what each boundary closes is summed
over the processes there (one small all-reduce per epoch), so `total_J`,
`epoch_energies_J` and `samples_seen` are the whole job's.

Energy methods are handed this monitor when the run is assembled (methods/services.py) and read
`epoch_energies_J`, `total_J`, `samples_seen` and `zeus_monitor`; the energy report finds it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from wattwise.energy.carbon import (
    DEFAULT_PUE,
    GridIntensity,
    check_pue,
    facility_J,
    grams_CO2e,
    provider_settings,
    resolve_intensity,
)
from wattwise.energy.carbon import J_PER_KWH as J_PER_KWH  # re-exported: callbacks convert kWh budgets
from wattwise.energy.estimate import EstimateModel
from wattwise.energy.meter import METER_MODES, EnergyMeter, EnergyReading

log = logging.getLogger(__name__)

_SEGMENT = "wattwise.segment"
_TEST = "wattwise.test"


def batch_size_of(batch: Any) -> int:
    """Samples in a batch, without touching the device (no sync)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple) and batch:
        return batch_size_of(batch[0])
    return 0


class EnergyMonitor(L.Callback):
    """Measures the fit's energy and logs it under the `energy/*` metric names.

    Args:
        mode: `auto`, `estimate` or `off` (see `EnergyMeter`).
        grid_gCO2_per_kWh: carbon intensity of the electricity, for `carbon/gCO2e`, where no
            `region` is set.
        estimate: power figures for the estimate (`cpu_W_per_core`, `gpu_W`, `base_W`).
        gpu_index: measure this CUDA device instead of the one the trainer uses (null: the
            trainer's own device). Useful when the GPU is driven by something other than Lightning.
        region: where the electricity comes from (country, grid zone or cloud region); its intensity
            comes from the provider or the shipped table (energy/carbon.py).
        pue: the data centre's power usage effectiveness (>= 1.0; 1.0 counts the devices only).
        provider: the live intensity provider's settings (`energy.provider`); asked once, at fit start.
    """

    def __init__(
        self,
        mode: str = "auto",
        grid_gCO2_per_kWh: float = 475.0,
        estimate: Mapping[str, float] | None = None,
        gpu_index: int | None = None,
        region: str | None = None,
        pue: float = DEFAULT_PUE,
        provider: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in METER_MODES:
            raise ValueError(f"energy.mode must be one of {METER_MODES}, got {mode!r}")
        if grid_gCO2_per_kWh < 0:
            raise ValueError(f"energy.grid_gCO2_per_kWh must be >= 0, got {grid_gCO2_per_kWh}")
        self.mode = mode
        self.grid_gCO2_per_kWh = float(grid_gCO2_per_kWh)
        self.estimate = EstimateModel(**dict(estimate or {}))
        self.gpu_index = gpu_index
        self.region = region
        self.pue = check_pue(pue)
        self.provider = provider_settings(provider)
        self.intensity: GridIntensity | None = None  # resolved at the fit's set-up
        self.meter: EnergyMeter | None = None
        self._fitting = True
        self._reset()

    # ---- state --------------------------------------------------------------------------
    @property
    def zeus_monitor(self) -> Any:
        """Zeus's ZeusMonitor behind the meter (the power tuner shares it), or None."""
        return getattr(self.meter, "zeus_monitor", None) if self.meter is not None else None

    def _reset(self) -> None:
        self.total_J: float | None = None
        self.gpu_J: float | None = None
        self.cpu_J: float | None = None
        self.time_s = 0.0
        self.samples_seen = 0
        self.epoch_energies_J: list[float] = []
        self.test_J: float | None = None
        # closed on this process since the last boundary, not yet summed over DDP processes
        self._pending: dict[str, float | None] = {"total_J": None, "gpu_J": None, "cpu_J": None}
        self._pending_samples = 0
        self._last_close_s = time.perf_counter()
        self._before_first_epoch = True
        self._epoch_closed = False

    def state_dict(self) -> dict[str, Any]:
        """Totals so far, so a resumed run continues with the energy already spent.

        Checkpoints saved at an epoch's end come right after the boundary and cost no read; one
        saved later than a second after it closes the open segment first (on this process only).
        """
        if self.meter is not None and self.meter.is_open(_SEGMENT) and self._open_for_s() > 1.0:
            self._roll()
        return {
            "total_J": self._add(self.total_J, self._pending["total_J"]),
            "gpu_J": self._add(self.gpu_J, self._pending["gpu_J"]),
            "cpu_J": self._add(self.cpu_J, self._pending["cpu_J"]),
            "time_s": self.time_s,
            "samples_seen": self.samples_seen,
            "epoch_energies_J": list(self.epoch_energies_J),
            "source": self.meter.source if self.meter else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._fitting:
            return  # trainer.test(ckpt_path="best") restores callbacks too: keep the whole fit's figures
        saved, now = state_dict.get("source"), self.source
        if saved is not None and saved != now:  # joules of two kinds must never be summed silently
            from wattwise.utils.errors import ConfigError

            raise ConfigError(
                f"ckpt_path: the checkpoint's energy was measured by {saved}, this run measures by {now}; "
                f"resume where the same source is available (energy=estimate when it was `estimate`), "
                "or start a fresh run without ckpt_path"
            )
        self.total_J = state_dict["total_J"]
        self.gpu_J = state_dict["gpu_J"]
        self.cpu_J = state_dict["cpu_J"]
        self.time_s = state_dict["time_s"]
        self.samples_seen = state_dict["samples_seen"]
        self.epoch_energies_J = list(state_dict["epoch_energies_J"])

    # ---- segments -----------------------------------------------------------------------
    @staticmethod
    def _add(a: float | None, b: float | None) -> float | None:
        if b is None:
            return a
        return b if a is None else a + b

    def _open_for_s(self) -> float:
        return time.perf_counter() - self._last_close_s

    def _account(self, r: EnergyReading) -> None:
        """Add a closed segment to what this process has pending."""
        for key, value in (("total_J", r.total_J), ("gpu_J", r.gpu_J), ("cpu_J", r.cpu_J)):
            self._pending[key] = self._add(self._pending[key], value)
        self.time_s += r.time_s
        self._last_close_s = time.perf_counter()

    def _roll(self) -> None:
        """Close the open segment into what is pending and open the next one."""
        assert self.meter is not None
        self._account(self.meter.end(_SEGMENT))
        self.meter.begin(_SEGMENT)

    def _settle(self, trainer: L.Trainer | None) -> tuple[float | None, int]:
        """Sum what is pending over DDP processes (None: this process only) and add it to the totals."""
        names = ("total_J", "gpu_J", "cpu_J")
        values = [self._pending[k] for k in names]
        samples = self._pending_samples
        if trainer is not None and trainer.world_size > 1:
            t = torch.tensor(
                [v or 0.0 for v in values] + [float(v is not None) for v in values] + [float(samples)],
                dtype=torch.float64,
                device=trainer.strategy.root_device,
            )
            t = trainer.strategy.reduce(t, reduce_op="sum")
            values = [float(t[i]) if t[3 + i] > 0 else None for i in range(3)]
            samples = int(t[6])
        self.total_J = self._add(self.total_J, values[0])
        self.gpu_J = self._add(self.gpu_J, values[1])
        self.cpu_J = self._add(self.cpu_J, values[2])
        self.samples_seen += samples
        self._pending = dict.fromkeys(names)
        self._pending_samples = 0
        return values[0], samples

    def _close_epoch(self, trainer: L.Trainer) -> None:
        self._roll()
        epoch_J, _ = self._settle(trainer)
        if epoch_J is not None:
            self.epoch_energies_J.append(epoch_J)
        self._epoch_closed = True

    # ---- hooks --------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._fitting = stage == "fit"
        if stage != "fit" or self.meter is not None:
            return
        self._reset()
        device = trainer.strategy.root_device
        gpu_index = self.gpu_index
        if gpu_index is None and device.type == "cuda":
            gpu_index = device.index if device.index is not None else torch.cuda.current_device()
        self.meter = EnergyMeter(self.mode, gpu_index=gpu_index, estimate=self.estimate)
        if trainer.is_global_zero:
            log.info("Energy: %s [%s]", self.meter.describe(), self.meter.source)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self.meter is not None
        # Asked when training starts, not at set-up: a carbon-aware start waits in its set-up, and
        # the carbon is priced at the hour the fit runs. Only the first process asks a live provider.
        provider = self.provider if trainer.is_global_zero else None
        self.intensity = resolve_intensity(self.region, self.grid_gCO2_per_kWh, provider)
        if trainer.is_global_zero:
            log.info(
                "Grid intensity: %.1f gCO2e/kWh (%s)", self.intensity.gCO2_per_kWh, self.intensity.source
            )
        self.meter.begin(_SEGMENT)
        self._last_close_s = time.perf_counter()
        self._before_first_epoch = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_closed = False
        if self._before_first_epoch:  # set-up and the sanity check count in the total only
            self._roll()
            self._settle(trainer)
            self._before_first_epoch = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._pending_samples += batch_size_of(batch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation at the end of a training epoch closes the epoch, before the checkpoint is saved.
        if trainer.sanity_checking or not self._fitting or self._epoch_closed:
            return
        at_epoch_end = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if at_epoch_end and self.meter is not None and self.meter.is_open(_SEGMENT):
            self._close_epoch(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._epoch_closed:
            self._close_epoch(trainer)
        figures = {k: v for k, v in self.summary_figures().items() if isinstance(v, int | float)}
        if figures:
            pl_module.log_dict(figures, on_step=False, on_epoch=True, rank_zero_only=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.meter is not None and self.meter.is_open(_SEGMENT):
            self._account(self.meter.end(_SEGMENT))
        self._settle(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Keep what was spent for the summary of a failed run. No collective here: other
        # processes may be gone, so under DDP only this process's pending energy is added.
        if self.meter is not None and self.meter.is_open(_SEGMENT):
            self._account(self.meter.end(_SEGMENT))
        self._settle(None)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.meter is not None:
            self.meter.begin(_TEST)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.meter is not None and self.meter.is_open(_TEST):
            self.test_J = self.meter.end(_TEST).total_J

    # ---- results ------------------------------------------------------------------------
    @property
    def source(self) -> str:
        return self.meter.source if self.meter else self.mode

    def summary_figures(self) -> dict[str, Any]:
        """The energy metrics so far, under the names in the README's metric table."""
        out: dict[str, Any] = {"energy/source": self.source, "time/train_s": self.time_s}
        if self.total_J is None:
            return out
        out["energy/total_J"] = self.total_J
        if self.gpu_J is not None:
            out["energy/gpu_J"] = self.gpu_J
        if self.cpu_J is not None:
            out["energy/cpu_J"] = self.cpu_J
        if self.epoch_energies_J:
            out["energy/epoch_J"] = self.epoch_energies_J[-1]
        if self.samples_seen:
            out["energy/J_per_sample"] = self.total_J / self.samples_seen
        if self.time_s > 0:
            out["energy/avg_W"] = self.total_J / self.time_s
        out.update(self.carbon_figures(self.total_J))
        if self.test_J is not None:
            out["energy/test_J"] = self.test_J
        return out

    def carbon_figures(self, device_J: float) -> dict[str, Any]:
        """PUE, facility energy and carbon of `device_J`, with the intensity and where it came from."""
        intensity = self.intensity or resolve_intensity(self.region, self.grid_gCO2_per_kWh, None)
        out: dict[str, Any] = {
            "energy/pue": self.pue,
            "energy/facility_J": facility_J(device_J, self.pue),
            "carbon/gCO2e": grams_CO2e(device_J, self.pue, intensity.gCO2_per_kWh),
            "carbon/intensity_gCO2_per_kWh": intensity.gCO2_per_kWh,
            "carbon/intensity_source": intensity.source,
        }
        if intensity.zone is not None:
            out["carbon/zone"] = intensity.zone
            out["carbon/location"] = intensity.location
        return out


def find_energy_monitor(trainer: L.Trainer) -> EnergyMonitor | None:
    """The run's energy monitor, for callbacks that act on energy (never open a second one)."""
    for cb in trainer.callbacks:
        if isinstance(cb, EnergyMonitor):
            return cb
    return None
