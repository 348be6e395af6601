"""EnergyReport: the always-on callback that forecasts the run's cost and leaves its energy report behind.

Why an always-on callback and not an energy method: it changes nothing about training (it reads
the EnergyMonitor's per-epoch figures, the way a user reads a meter), every run should have a
forecast and a report whatever methods it uses, and methods are what `green`, sweeps and the
contract zoo enumerate. The one thing it can do to a run, stop it before an epoch that would cross a
budget the user set here, is the user's explicit request and uses `trainer.should_stop` only.

Each epoch (after the monitor closed it, after the energy methods acted) it
- forecasts the whole fit from the epochs so far (energy/forecast.py) and shows the joules spent and
  the forecast on the progress bar (`energy/spent_J`, `forecast/total_J`);
- stops the fit when the next epoch, at its predicted cost, would cross `budget_J` or
  `budget_gCO2e` (`forecast/stop_reason` says which and by how much).
At the fit's end it writes `forecast/*` to the summary (the forecast made after
`forecast_after_epochs` epochs and its error against the real total), and in the run dir the plot
of the monitored metric (validation accuracy for the bundled classifier; a loss as a plain number)
against cumulative energy and a model-card snippet; under SLURM it reads the job's own accounting
(`sacct`) to show beside wattwise's figure.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L

from wattwise.energy.carbon import J_PER_KWH
from wattwise.energy.forecast import (
    DEFAULT_WINDOW,
    EpochCost,
    RunForecast,
    crossing_budget,
    forecast_error_pct,
    forecast_run,
    next_epoch_cost,
)
from wattwise.energy.monitor import EnergyMonitor, find_energy_monitor
from wattwise.utils.errors import ConfigError, require_int

log = logging.getLogger(__name__)

KEY = "callbacks.energy_report"


def _positive_or_none(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{KEY}.{name} must be a number > 0 or null, got {value!r}")
    return float(value)


def _epoch_limit(trainer: L.Trainer, done: int) -> int:
    """Epochs the forecast covers: max_epochs, or, for an unlimited run (-1, or None under
    max_steps), the epochs max_steps allows where it is set, else one more than done so far."""
    limit = trainer.max_epochs
    if limit is not None and limit > 0:
        return int(limit)
    steps, per_epoch = getattr(trainer, "max_steps", None), getattr(trainer, "num_training_batches", None)
    if steps is not None and steps > 0 and isinstance(per_epoch, int) and per_epoch > 0:
        return max(done, -(-int(steps) // per_epoch))
    return done + 1


class EnergyReport(L.Callback):
    """See the module doc. Settings are `callbacks.energy_report.*` (conf/callbacks/default.yaml)."""

    def __init__(
        self,
        forecast_after_epochs: int = 1,
        window: int = DEFAULT_WINDOW,
        budget_J: float | None = None,
        budget_gCO2e: float | None = None,
        monitor: str = "auto",
        report_dir: str | None = None,
        plot: bool = True,
        model_card: bool = True,
        training_type: str = "pre-training",
        sacct_timeout_s: float = 5.0,
    ) -> None:
        for name, v in (("forecast_after_epochs", forecast_after_epochs), ("window", window)):
            require_int(f"{KEY}.{name}", v, 1)
        if training_type not in ("pre-training", "fine-tuning"):
            raise ConfigError(
                f"{KEY}.training_type must be pre-training or fine-tuning, got {training_type!r}"
            )
        self.forecast_after_epochs = forecast_after_epochs
        self.window = window
        self.budget_J = _positive_or_none("budget_J", budget_J)
        self.budget_gCO2e = _positive_or_none("budget_gCO2e", budget_gCO2e)
        self.monitor = monitor
        self.report_dir = report_dir
        self.plot = plot
        self.model_card = model_card
        self.training_type = training_type
        self.sacct_timeout_s = float(sacct_timeout_s)
        self.history: list[EpochCost] = []
        self.cumulative_J: list[float] = []
        self.cumulative_s: list[float] = []
        self.metric: list[float | None] = []
        self.first: RunForecast | None = None
        self.latest: RunForecast | None = None
        self.stop_reason: str | None = None
        self.error_pct: float | None = None
        self.time_error_pct: float | None = None
        self.files: dict[str, str] = {}
        self.slurm: dict[str, Any] = {}
        self._epoch_start_s = 0.0
        self._fitting = True

    def _plotted(self, trainer: L.Trainer) -> str:
        """The metric the plot draws: `auto` (a plain Trainer; train.py passes the run's monitor) is
        settled at the first epoch from what validation logged, val/acc else val/loss (utils/monitor.py);
        with neither the plot stays empty: the report never fails a run."""
        if self.monitor == "auto":
            from wattwise.utils.monitor import choose

            try:
                self.monitor = choose(trainer.callback_metrics)[0]
            except ConfigError:
                return "auto"
        return self.monitor

    # ---- what the forecast reads ------------------------------------------------------------------
    @staticmethod
    def _measuring(energy: EnergyMonitor | None) -> bool:
        return energy is not None and energy.mode != "off" and energy.total_J is not None

    @staticmethod
    def grams_per_J(energy: EnergyMonitor) -> float:
        figures = energy.carbon_figures(J_PER_KWH)  # the carbon of one kWh at the devices, PUE included
        return figures["carbon/gCO2e"] / J_PER_KWH

    def budgets_J(self, trainer: L.Trainer, energy: EnergyMonitor) -> dict[str, float]:
        """Every budget on this fit in device joules: this callback's and those energy methods declare."""
        out: dict[str, float] = {}
        if self.budget_J is not None:
            out["budget_J"] = self.budget_J
        if self.budget_gCO2e is not None and self.grams_per_J(energy) > 0:
            out["budget_gCO2e"] = self.budget_gCO2e / self.grams_per_J(energy)
        for cb in trainer.callbacks:  # methods declare theirs (EnergyMethod.energy_budgets_J)
            declared = getattr(cb, "energy_budgets_J", None)
            if callable(declared) and getattr(cb, "active", False):
                out.update(declared())
        return out

    # ---- hooks ----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._fitting = stage == "fit"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        energy = find_energy_monitor(trainer)
        self._epoch_start_s = energy.time_s if energy is not None else 0.0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        energy = find_energy_monitor(trainer)
        if not self._measuring(energy) or not energy.epoch_energies_J:
            return
        if len(energy.epoch_energies_J) <= len(self.history):  # no epoch closed since the last call
            return
        self.history.append(EpochCost(energy.epoch_energies_J[-1], energy.time_s - self._epoch_start_s))
        self.cumulative_J.append(float(energy.total_J))
        self.cumulative_s.append(energy.time_s)
        value = trainer.callback_metrics.get(self._plotted(trainer))
        self.metric.append(float(value) if value is not None else None)
        if len(self.history) < self.forecast_after_epochs:
            return
        budgets = self.budgets_J(trainer, energy)
        self.latest = self._forecast_at(len(self.history), trainer, energy, budgets)
        # After a resume the first forecast is re-made from the restored epochs, for this run's settings.
        if self.first is None:
            self.first = self._forecast_at(self.forecast_after_epochs, trainer, energy, budgets)
            if trainer.is_global_zero:
                log.info(
                    "Forecast after %d epoch(s): %.0f J, %.0f s, %.4g g CO2e for %d epochs (%s)",
                    self.first.after_epochs,
                    self.first.total_J,
                    self.first.time_s,
                    self.first.gCO2e,
                    self.first.epochs,
                    self.first.bound,
                )
        pl_module.log(
            "energy/spent_J", float(energy.total_J), prog_bar=True, logger=False, rank_zero_only=True
        )
        pl_module.log("forecast/total_J", self.latest.total_J, prog_bar=True, rank_zero_only=True)
        pl_module.log("forecast/gCO2e", self.latest.gCO2e, rank_zero_only=True)
        self._check_budgets(trainer, energy, budgets)

    def _forecast_at(
        self, epochs: int, trainer: L.Trainer, energy: EnergyMonitor, budgets: dict[str, float]
    ) -> RunForecast:
        """The forecast as it stood after `epochs` epochs of this fit."""
        return forecast_run(
            self.history[:epochs],
            self.cumulative_J[epochs - 1],
            self.cumulative_s[epochs - 1],
            _epoch_limit(trainer, len(self.history)),
            self.grams_per_J(energy),
            budgets,
            self.window,
        )

    def _check_budgets(self, trainer: L.Trainer, energy: EnergyMonitor, budgets: dict[str, float]) -> None:
        own = {
            k: v for k, v in budgets.items() if k in ("budget_J", "budget_gCO2e")
        }  # early_stop keeps its own
        limit = trainer.max_epochs
        last_epoch = limit is not None and limit > 0 and trainer.current_epoch + 1 >= limit
        if not own or trainer.should_stop or last_epoch:  # unlimited runs (-1, None) are checked too
            return
        nxt = next_epoch_cost(self.history, self.window).epoch_J
        crossed = crossing_budget(float(energy.total_J), nxt, own)
        if crossed is None:
            return
        spent = float(energy.total_J)
        if crossed == "budget_gCO2e":
            g = self.grams_per_J(energy)
            self.stop_reason = (
                f"budget_gCO2e: the next epoch (~{nxt * g:.4g} g) would take the fit to "
                f"{(spent + nxt) * g:.4g} g CO2e, over the budget of {self.budget_gCO2e:g} g"
            )
        else:
            self.stop_reason = (
                f"budget_J: the next epoch (~{nxt:.0f} J) would take the fit to {spent + nxt:.0f} J, "
                f"over the budget of {self.budget_J:g} J"
            )
        trainer.should_stop = True
        if trainer.is_global_zero:
            log.info("Stopping before epoch %d: %s", trainer.current_epoch + 1, self.stop_reason)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        energy = find_energy_monitor(trainer)
        if self.first is not None and self._measuring(energy):
            self.error_pct = forecast_error_pct(self.first, self.history, float(energy.total_J))
            self.time_error_pct = forecast_error_pct(self.first, self.history, energy.time_s, of="time")
        if not trainer.is_global_zero:
            return
        from wattwise.utils.slurm_energy import read_slurm_energy

        slurm = read_slurm_energy(timeout_s=self.sacct_timeout_s)
        if slurm is not None:
            self.slurm = {"slurm/job_id": slurm.job_id, "slurm/note": slurm.note}
            if slurm.consumed_J is not None:
                self.slurm["slurm/consumed_energy_J"] = slurm.consumed_J
        if self.report_dir and self._measuring(energy):
            try:
                self._write_files(trainer, energy)
            except (OSError, ImportError) as err:  # an unwritable report (or no matplotlib) never fails a run
                log.warning("Energy report not written: %s", err)

    # ---- the files --------------------------------------------------------------------------------
    def _write_files(self, trainer: L.Trainer, energy: EnergyMonitor) -> None:
        out = Path(self.report_dir)
        out.mkdir(parents=True, exist_ok=True)
        estimate = not energy.source.startswith("zeus")
        label = f"ESTIMATE, {energy.source}" if estimate else f"measured, {energy.source}"
        figures = energy.summary_figures()
        if self.model_card:  # first: it needs nothing beyond the standard library
            import wattwise
            from wattwise.utils.model_card import MODEL_CARD_FILE, co2_card

            text = co2_card(
                emissions_g=figures["carbon/gCO2e"],
                source=f"wattwise {wattwise.__version__} ({label}; "
                f"grid intensity: {figures['carbon/intensity_source']})",
                training_type=self.training_type,
                location=figures.get("carbon/location") or "unknown (energy.region not set)",
                hardware=hardware_used(trainer),
                measured=not estimate,
                details=self._card_details(energy, figures, label),
            )
            path = out / MODEL_CARD_FILE
            path.write_text(text)
            self.files["report/model_card"] = str(path)
        if self.plot and self.cumulative_J:
            from wattwise.utils.energy_plot import ENERGY_PLOT_FILE, plot_accuracy_vs_energy

            where = figures.get("carbon/location") or "no energy.region"
            title = f"{self.monitor} vs energy, {len(self.history)} epochs, {where}"
            path = plot_accuracy_vs_energy(
                self.cumulative_J,
                self.metric,
                self.grams_per_J(energy),
                out / ENERGY_PLOT_FILE,
                title,
                label,
                forecast=(self.first.total_J, self.first.after_epochs) if self.first else None,
                metric=self.monitor,
            )
            self.files["report/plot"] = str(path)

    def _card_details(self, energy: EnergyMonitor, figures: dict[str, Any], label: str) -> dict[str, str]:
        rows = {
            "energy at the devices": f"{figures['energy/total_J']:.1f} J ({label})",
            "PUE": f"{energy.pue:g}",
            "energy at the facility": f"{figures['energy/facility_J']:.1f} J",
            "grid intensity": f"{figures['carbon/intensity_gCO2_per_kWh']:.1f} gCO2e/kWh "
            f"({figures['carbon/intensity_source']})",
            "epochs": str(len(self.history)),
            "wall time (fit)": f"{energy.time_s:.1f} s",
        }
        if "slurm/consumed_energy_J" in self.slurm:
            rows["SLURM accounting (sacct)"] = f"{self.slurm['slurm/consumed_energy_J']:.0f} J"
        return rows

    # ---- results ----------------------------------------------------------------------------------
    def summary_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.first is not None:
            out.update(self.first.figures())
        if self.error_pct is not None:
            out["forecast/error_pct"] = self.error_pct
        if self.time_error_pct is not None:
            out["forecast/time_error_pct"] = self.time_error_pct
        if self.stop_reason is not None:
            out["forecast/stop_reason"] = self.stop_reason
        out.update(self.slurm)
        out.update(self.files)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The measured epochs; the forecasts are re-made from them (a resumed run may set another
        max_epochs or budget, and its forecast is for the run it will be)."""
        return {
            "history": [asdict(c) for c in self.history],
            "cumulative_J": list(self.cumulative_J),
            "cumulative_s": list(self.cumulative_s),
            "metric": list(self.metric),
            "monitor": self.monitor,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._fitting:
            return  # trainer.test(ckpt_path="best") restores callbacks too: keep the whole fit's figures
        self.history = [EpochCost(**c) for c in state_dict.get("history", [])]
        self.cumulative_J = list(state_dict.get("cumulative_J", []))
        self.cumulative_s = list(state_dict.get("cumulative_s", []))
        self.metric = list(state_dict.get("metric", []))
        if self.monitor == "auto" and state_dict.get("monitor"):  # the choice the saved run made
            self.monitor = str(state_dict["monitor"])
        self.first = None


def hardware_used(trainer: L.Trainer) -> str:
    """What trained the model, for the model card: the GPUs, or the CPU model and threads."""
    import torch

    device = trainer.strategy.root_device
    n = max(1, trainer.world_size)
    if device.type == "cuda":
        return f"{n}x {torch.cuda.get_device_name(device)}"
    return f"{n}x CPU {cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
