"""Energy-aware early stopping: stop when another kilojoule no longer buys accuracy (`+optim=early_stop`).

The method card is README.md beside this file (the four rules, what it saves and costs, when not
to use it, resuming). The rules themselves are pure functions of the per-epoch history in
`rules.py`; this callback gathers each epoch's metric and energy, asks them, and stops the fit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
from lightning.pytorch.utilities.model_helpers import is_overridden

from wattwise.energy.monitor import J_PER_KWH, EnergyMonitor
from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod, StructureChange
from wattwise.methods.early_stop.rules import (
    REASONS,
    EpochRecord,
    budget_fired,
    diminishing_returns_fired,
    diminishing_returns_rates,
    epoch_energy_J,
    fired_rules,
    next_epoch_J,
    patience_fired,
    target_fired,
)
from wattwise.methods.shared.settings import MethodSettings, integer, number, one_of, setting, text
from wattwise.utils.errors import ConfigError
from wattwise.utils.monitor import choose

log = logging.getLogger(__name__)

KEY = "callbacks.early_stop"


@dataclass(frozen=True)
class EarlyStopSettings(MethodSettings):
    """`callbacks.early_stop.*`: the keys, their defaults and their checks (see EarlyStop's Args)."""

    monitor: str = setting("val/acc", text())
    mode: str = setting("max", one_of("min", "max", "auto"))
    budget_J: float | None = setting(None, number(low=0, strict=True), optional=True)
    budget_kWh: float | None = setting(None, number(low=0, strict=True), optional=True)
    window: int = setting(8, integer(low=1))
    min_gain_fraction: float | None = setting(0.2, number(low=0), optional=True)
    min_gain_per_kJ: float | None = setting(None, number(low=0), optional=True)
    diminishing_patience: int = setting(4, integer(low=1))
    target: float | None = setting(None, number(), optional=True)
    patience: int | None = setting(None, integer(low=1), optional=True)
    min_delta: float = setting(0.0, number(low=0))

    @classmethod
    def bad_combinations(cls) -> tuple[dict[str, Any], ...]:
        return ({"budget_J": 1000.0, "budget_kWh": 0.1},)

    def check(self, key: str) -> None:
        if self.budget_J is not None and self.budget_kWh is not None:
            raise ConfigError(
                f"{key}: set budget_J or budget_kWh, not both "
                f"(got {self.budget_J} J and {self.budget_kWh} kWh)"
            )


class EarlyStop(EnergyMethod):
    """Stop the fit when an energy budget, diminishing returns per kJ, a target or patience says so.

    Args:
        monitor: the metric the rules watch (must be logged, e.g. `val/acc`).
        mode: `max` if larger is better, `min` if smaller is better.
        budget_J, budget_kWh: energy budget for the whole fit (give one of them, or neither).
        window: epochs over which the gain per kJ is measured, and whose largest cost predicts
            the next epoch's for the budget rule (>= 1).
        min_gain_fraction: diminishing returns fire when the window's gain per kJ falls below this
            fraction of the run's average gain per kJ so far (null: no relative threshold).
        min_gain_per_kJ: an absolute floor, in metric units per kJ (null: none). With both null
            the diminishing-returns rule is off.
        diminishing_patience: validated epochs in a row below the threshold before stopping (>= 1).
        target: stop as soon as the metric reaches this value (null: no target).
        patience: the ordinary rule: validations without improvement before stopping (null: off).
        min_delta: improvement smaller than this does not count, for `patience` (>= 0).
        if_not_applicable: `fail` or `skip` where the energy rules have no measured energy.
    """

    name = "early_stop"
    figure_prefix = "stop/"
    summary_keys = ("stop/reason", "stop/epoch", "stop/energy_J")
    recipes = {"green": {}}

    def __init__(
        self,
        monitor: str = "val/acc",
        mode: str = "max",
        budget_J: float | None = None,
        budget_kWh: float | None = None,
        window: int = 8,
        min_gain_fraction: float | None = 0.2,
        min_gain_per_kJ: float | None = None,
        diminishing_patience: int = 4,
        target: float | None = None,
        patience: int | None = None,
        min_delta: float = 0.0,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable)
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(
                f"{KEY}.monitor must be the name of a logged metric, e.g. val/acc, got {monitor!r}"
            )
        fields = EarlyStopSettings.__dataclass_fields__
        s = self.settings = EarlyStopSettings.build(KEY, **{k: v for k, v in locals().items() if k in fields})
        self.monitor, self.mode = s.monitor, s.mode
        self.sign = 1.0 if s.mode == "max" else -1.0
        self.budget_J = s.budget_kWh * J_PER_KWH if s.budget_kWh is not None else s.budget_J

        self.history: list[EpochRecord] = []
        self.since = 0  # history index the metric rules count from (a structure change moves it)
        self.stopped: dict[str, Any] | None = None  # reason, epoch, energy_J of the stop
        self._final: dict[str, Any] | None = None  # epoch and energy at train end when no rule fired
        self._monitor: EnergyMonitor | None = None
        self._epoch_start_J = 0.0
        self._epochs_logged = 0
        self._validated_epoch: int | None = None  # the epoch whose validation has run
        self._validated_value: float | None = None
        self._fitting = True

    @property
    def uses_energy(self) -> bool:
        s = self.settings
        return self.budget_J is not None or s.min_gain_fraction is not None or s.min_gain_per_kJ is not None

    def requirements(self) -> frozenset[str]:
        return frozenset({"energy"}) if self.uses_energy else frozenset()

    def on_structure_change(
        self, trainer: L.Trainer, pl_module: L.LightningModule, change: StructureChange
    ) -> None:
        # The net that reaches the next validation is a different one: judge it from here on.
        self.since = len(self.history)

    # ---- energy -------------------------------------------------------------------------
    def _spent_J(self, trainer: L.Trainer) -> float:
        """Energy of the fit so far; the monitor's totals are already summed over DDP ranks."""
        return float((self._monitor.total_J if self._monitor else None) or 0.0)

    # ---- hooks --------------------------------------------------------------------------
    def energy_budgets_J(self) -> dict[str, float]:
        """The early-stop budget, shown beside the report's own (see EnergyMethod)."""
        return {"early_stop budget": float(self.budget_J)} if self.budget_J is not None else {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._fitting = stage == "fit"
        if stage != "fit" or not self.active:
            return
        self._monitor = self.energy_monitor
        if self.uses_energy and (self._monitor is None or self._monitor.mode == "off"):
            self.step_aside(
                "its energy rules need the run's energy measured, but energy is not measured: use "
                f"energy=auto or energy=estimate, or turn the energy rules off ({KEY}.budget_J=null "
                f"{KEY}.min_gain_fraction=null {KEY}.min_gain_per_kJ=null)",
                trainer,
            )
            return
        self.status = STATUS_ACTIVE
        if self._monitor is not None:
            callbacks = trainer.callbacks
            if callbacks.index(self._monitor) > callbacks.index(self):
                raise ConfigError(
                    f"{KEY} must come after the EnergyMonitor in trainer.callbacks: it reads the energy the "
                    "monitor closes at each epoch's end."
                )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        self.stopped, self._final = None, None
        self._epochs_logged = len(self._monitor.epoch_energies_J) if self._monitor else 0
        # A resumed run: the restored history and the energy already spent may rule out even one more epoch.
        if self.history and self.budget_J is not None:
            spent = self._spent_J(trainer)
            if budget_fired(self.history, spent, self.budget_J, self.settings.window):
                self._stop(trainer, ["energy_budget"], spent, epochs=trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        # The monitor (earlier in the list) has just closed everything before this epoch.
        self._epoch_start_J = (self._monitor.total_J or 0.0) if self._monitor else 0.0

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Before the first training step: choose an `auto` monitor, or fail on one never logged."""
        if self._fitting and self.active:
            self._settle_monitor(trainer)

    def _settle_monitor(self, trainer: L.Trainer) -> None:
        """`auto` monitor/mode from what validation logged (utils/monitor.py); a missing one fails."""
        if self.monitor != "auto" and self.mode != "auto":
            if self.monitor not in trainer.callback_metrics:
                self._missing_metric(trainer)
            return
        try:
            self.monitor, self.mode, why = choose(trainer.callback_metrics, self.monitor, self.mode)
        except ConfigError as err:
            raise ConfigError(f"{KEY}: {err}") from None
        self.sign = 1.0 if self.mode == "max" else -1.0
        if trainer.is_global_zero:
            log.info("early_stop: watching %s (%s): %s", self.monitor, self.mode, why)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._fitting or not self.active:
            return
        if "auto" in (self.monitor, self.mode):  # no sanity check ran (num_sanity_val_steps=0)
            self._settle_monitor(trainer)
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            self._missing_metric(trainer)
        self._validated_epoch = trainer.current_epoch
        self._validated_value = float(value)

    def _missing_metric(self, trainer: L.Trainer) -> None:
        logged = sorted(
            k for k in trainer.callback_metrics if not k.startswith(("energy/", "carbon/", "time/"))
        )
        raise ConfigError(
            f"{KEY}.monitor={self.monitor!r} was never logged. "
            f"Logged metrics: {', '.join(logged) or 'none'}. Set {KEY}.monitor to one of them."
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        epoch = trainer.current_epoch
        metric = self._epoch_metric(trainer, pl_module)
        spent = self._spent_J(trainer)
        energies = self._monitor.epoch_energies_J if self._monitor else []
        epoch_J = epoch_energy_J(energies, self._epochs_logged, spent, self._epoch_start_J)
        self._epochs_logged = len(energies)
        self.history.append(EpochRecord(epoch=epoch, metric=metric, epoch_J=epoch_J, spent_J=spent))
        self._log_rates(pl_module)

        last = trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch + 1
        fired = [] if last else self._evaluate(spent)  # the fit ends here anyway: reason max_epochs
        decision = bool(fired)
        if trainer.world_size > 1:  # every rank must take the same decision
            decision = trainer.strategy.reduce_boolean_decision(decision, all=False)
        if decision:
            self._stop(trainer, fired or ["other_rank"], spent, epochs=epoch + 1)

    def _epoch_metric(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        """This epoch's validated metric; a training metric when the fit has no validation loop;
        None for an epoch that was not validated (check_val_every_n_epoch > 1)."""
        if self._validated_epoch == trainer.current_epoch and self._validated_value is not None:
            return self._validated_value
        if _has_validation(trainer, pl_module):
            return None
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            self._missing_metric(trainer)
        return float(value)

    def _log_rates(self, pl_module: L.LightningModule) -> None:
        """The two numbers the diminishing-returns rule compares, so a threshold can be tuned from a log."""
        s = self.settings
        rates = diminishing_returns_rates(
            self.history, self.sign, s.window, s.min_gain_fraction, s.min_gain_per_kJ
        )
        if rates and rates[-1] is not None and math.isfinite(rates[-1][0]):
            pl_module.log_dict(
                {"stop/gain_per_kJ": rates[-1][0], "stop/min_gain_per_kJ": rates[-1][1]},
                on_step=False,
                on_epoch=True,
                rank_zero_only=True,
            )

    def _evaluate(self, spent_J: float) -> list[str]:
        """The rules that fire now (see rules.fired_rules); bench/early_stop_replay.py calls it too."""
        return fired_rules(self.history, self.since, spent_J, self.budget_J, self.settings)

    def _stop(self, trainer: L.Trainer, reasons: list[str], spent_J: float, epochs: int) -> None:
        trainer.should_stop = True
        self.stopped = {"reason": reasons[0], "epoch": epochs, "energy_J": spent_J}
        if not trainer.is_global_zero:
            return
        also = f" (also: {', '.join(reasons[1:])})" if len(reasons) > 1 else ""
        log.info("Early stop after %d epochs, %.4g J spent: %s%s", epochs, spent_J, reasons[0], also)
        if "energy_budget" in reasons and self.budget_J is not None:
            predicted = next_epoch_J(self.history, self.settings.window)
            log.info("Budget %.4g J; the next epoch would cost about %.4g J", self.budget_J, predicted or 0.0)
            if spent_J > self.budget_J:
                log.warning(
                    "The budget (%.4g J) was crossed before an epoch's cost was known (the first epoch, or "
                    "set-up and sanity check); %s.budget_J is too small for one epoch of this run.",
                    self.budget_J,
                    KEY,
                )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        if self.stopped is None:
            reached = trainer.current_epoch >= (trainer.max_epochs or 0)
            self._final = {
                "reason": "max_epochs" if reached else "other",
                "epoch": trainer.current_epoch,
                "energy_J": self._spent_J(trainer),
            }

    # ---- results and checkpoints --------------------------------------------------------
    def method_figures(self) -> dict[str, Any]:
        """`stop/reason`, `stop/epoch` (epochs trained) and `stop/energy_J` for summary.json."""
        info = self.stopped or self._final
        if info is None:
            return {}
        return {"stop/reason": info["reason"], "stop/epoch": info["epoch"], "stop/energy_J": info["energy_J"]}

    def state_dict(self) -> dict[str, Any]:
        """The per-epoch history, so a resumed run replays the rules with the energy already spent.

        Checkpoints are saved at validation end, before this epoch's record exists: the record is
        added here from the validated metric and the energy the monitor has closed so far.
        """
        rows = [asdict(r) for r in self.history]
        epoch = self._validated_epoch
        if epoch is not None and (not self.history or self.history[-1].epoch < epoch) and self._monitor:
            spent = self._monitor.total_J or 0.0
            rows.append(asdict(EpochRecord(epoch, self._validated_value, spent - self._epoch_start_J, spent)))
        return {"history": rows, "monitor": self.monitor, "mode": self.mode, "since": self.since}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._fitting:
            return  # trainer.test(ckpt_path="best") restores callbacks too: keep the fit's history
        if self.monitor == "auto" and state_dict.get("monitor"):  # the choice the saved run made
            self.monitor = str(state_dict["monitor"])
        if self.mode == "auto" and state_dict.get("mode") in ("min", "max"):
            self.mode = str(state_dict["mode"])
            self.sign = 1.0 if self.mode == "max" else -1.0
        if state_dict.get("monitor") != self.monitor or state_dict.get("mode") != self.mode:
            log.warning(
                "Resuming with %s monitor=%s mode=%s, saved with monitor=%s mode=%s: metric history dropped.",
                KEY,
                self.monitor,
                self.mode,
                state_dict.get("monitor"),
                state_dict.get("mode"),
            )
            self.history = [EpochRecord(**{**r, "metric": None}) for r in state_dict["history"]]
            return
        self.history = [EpochRecord(**r) for r in state_dict["history"]]
        self.since = int(state_dict.get("since", 0))

    @classmethod
    def report_rows(cls, summary: Any) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        if summary.get("stop/reason") is not None:
            rows.append(
                (
                    "stopped (early_stop)",
                    f"{summary['stop/reason']} after {summary.get('stop/epoch', '?')} epochs",
                )
            )
        return rows


def _has_validation(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
    """Whether this fit validates at all (not whether it validated this epoch)."""
    return trainer.limit_val_batches != 0 and is_overridden("validation_step", pl_module)


__all__: list[str] = [
    "REASONS",
    "EarlyStop",
    "EarlyStopSettings",
    "EpochRecord",
    "budget_fired",
    "diminishing_returns_fired",
    "diminishing_returns_rates",
    "next_epoch_J",
    "patience_fired",
    "target_fired",
]
