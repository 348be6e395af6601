"""The method contract: what every energy-saving method declares and how the others hear from it.

Every method in `wattwise.methods` is an `EnergyMethod` (a Lightning callback) and declares, as
class attributes, what the rest of wattwise needs to know about it without reading its code:

- `name`: its registry key; also its config file (`conf/optim/<name>.yaml`), its config node
  (`callbacks.<name>`), its checkpoint `state_key` and the prefix of its status figure
  (`<name>/status` in summary.json).
- `figure_prefix`: the prefix of the summary figures it contributes (`prune/`, `stop/`, ...).
- `summary_keys`: the figures it always reports once a fit has run (the contract tests check
  that they reach summary.json and the loggers).
- `runs_after`: methods whose hooks must run before this one's in the same event.
- `recipes`: the recipes (`green`) it belongs to, each with the settings it takes there.
- `in_comparisons`: whether `make sweep`, the Optuna search and `make bench` compare it as a
  variant (default True). False for a method that changes when a run spends its energy, not how
  much (`carbon_aware`): offline, without its provider, it would only repeat the baseline; and
  for one that needs an input only the user can give (`distill`'s teacher), which has a
  benchmark of its own.

and, as methods that may look at the config or the net:

- `provides` / `uses`: services it offers the others (the power tuner's `power_limits`) and
  services it uses where present (the batch-size finder's joint search); see `services.py`.
  Every method is handed the run's energy monitor (`self.energy_monitor`), never looks it up.
- `energy_budgets_J()`: budgets on the fit (device joules) that the energy report shows.
- `requirements()`: what the run must provide (`"energy"`: the energy monitor, measuring).
- `trainer_settings(trainer_cfg)`: Trainer arguments it needs (amp's precision); applied when
  the Trainer is built, so no method's YAML reaches into the `trainer` node.
- `on_structure_change(...)`: called when another method changed the net's shape (pruning);
  each method resets what it keeps about the old net. Nobody writes another callback's fields:
  `announce_structure_change` tells everyone, Lightning's own checkpoint and early-stopping
  callbacks included.
- `report_rows(summary)`: the lines it adds to the table printed at the end of a run.

A method that cannot act on the net or hardware in front of it calls `step_aside(reason)`.
What happens then is the user's choice, `callbacks.<name>.if_not_applicable`: `fail` (the
default when a method is asked for by name) stops the run with one line naming the key and
the way out; `skip` (what recipes such as `green` set) logs one line, records
`<name>/status: skipped` and `<name>/skipped` with the reason, and the run goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning as L
import torch

from wattwise.methods import services as run_services
from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)

IF_NOT_APPLICABLE = ("fail", "skip")

# Values of `<name>/status` that every method shares; methods add their own (power: `tuned`, ...).
STATUS_IDLE = "idle"  # built, fit not started
STATUS_ACTIVE = "active"  # acting on this fit
STATUS_SKIPPED = "skipped"  # stepped aside: does not apply to this net or hardware


class NotApplicableError(ConfigError):
    """A method asked for by name does not apply to this net or hardware (one line, exit 2)."""


@dataclass(frozen=True)
class StructureChange:
    """What a method that reshaped the net tells the others.

    `restart_best`: checkpoints and early stopping should forget the best score of the old
    net (its files and patience were about a different architecture).
    """

    source: str
    epoch: int
    macs: int | None = None
    params: int | None = None
    restart_best: bool = True


class EnergyMethod(L.Callback):
    """Base class of every energy-saving method; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    figure_prefix: ClassVar[str] = ""
    summary_keys: ClassVar[tuple[str, ...]] = ()
    runs_after: ClassVar[tuple[str, ...]] = ()
    recipes: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    in_comparisons: ClassVar[bool] = True
    provides: ClassVar[tuple[str, ...]] = ()
    uses: ClassVar[tuple[str, ...]] = ()

    def __init__(self, if_not_applicable: str = "fail") -> None:
        if if_not_applicable not in IF_NOT_APPLICABLE:
            raise ConfigError(
                f"{self.config_key}.if_not_applicable must be fail or skip, got {if_not_applicable!r}"
            )
        self.if_not_applicable = if_not_applicable
        self.status: str = STATUS_IDLE
        self.skipped_reason: str | None = None
        self.services: dict[str, Any] = {}
        self._services_bound = False

    # ---- services -----------------------------------------------------------------------------
    def bind_services(self, services: Mapping[str, Any]) -> None:
        """Called once where methods are assembled: the energy monitor and the services it `uses`."""
        wanted = {run_services.ENERGY_MONITOR, *self.uses}
        self.services = {k: v for k, v in services.items() if k in wanted}
        self._services_bound = True

    def ensure_services(self, trainer: L.Trainer | None) -> None:
        """In a plain Trainer nobody assembled the run: resolve the services from its callbacks.

        Called at `setup`, and by methods whose `on_fit_start` (or a service call) needs them.
        """
        if self._services_bound:
            return
        callbacks = list(getattr(trainer, "callbacks", None) or [])
        if not any(cb is self for cb in callbacks):
            callbacks.append(self)
        run_services.bind(callbacks)

    @property
    def energy_monitor(self) -> Any:
        """The run's energy monitor, handed in at assembly (None without one)."""
        return self.services.get(run_services.ENERGY_MONITOR)

    def provide(self, service: str) -> Any:
        """The object behind a service this method `provides` (itself, by default)."""
        return self

    def energy_budgets_J(self) -> dict[str, float]:
        """Budgets this method holds on the fit, in device joules, for the energy report."""
        return {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.ensure_services(trainer)

    # ---- identity -----------------------------------------------------------------------------
    @property
    def config_key(self) -> str:
        return f"callbacks.{self.name}"

    @property
    def state_key(self) -> str:
        """Stable across refactors (Lightning's default is the class's qualified name)."""
        return f"wattwise.{self.name}"

    # ---- what it needs ------------------------------------------------------------------------
    def requirements(self) -> frozenset[str]:
        """What the run must provide: `energy` (a measuring energy monitor)."""
        return frozenset()

    def trainer_settings(self, trainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Trainer arguments this method needs, given the trainer config it will be built from."""
        return {}

    # ---- stepping aside -----------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.status != STATUS_SKIPPED

    def step_aside(self, reason: str, trainer: L.Trainer | None = None) -> None:
        """This method does not apply here: fail in one line, or skip and say so (see module doc)."""
        if self.if_not_applicable == "fail":
            raise NotApplicableError(
                f"+optim={self.name} does not apply here: {reason}. Drop +optim={self.name}, or set "
                f"{self.config_key}.if_not_applicable=skip to train without it."
            )
        self.status = STATUS_SKIPPED
        self.skipped_reason = reason
        if trainer is None or trainer.is_global_zero:
            log.warning("%s: steps aside: %s", self.name, reason)

    # ---- reacting to others -------------------------------------------------------------------
    def on_structure_change(
        self, trainer: L.Trainer, pl_module: L.LightningModule, change: StructureChange
    ) -> None:
        """The net changed shape (another method pruned it); reset what depended on the old one."""

    # ---- results ------------------------------------------------------------------------------
    def method_figures(self) -> dict[str, Any]:
        """This method's own figures (under `figure_prefix`); subclasses override this."""
        return {}

    def summary_figures(self) -> dict[str, Any]:
        """`<name>/status`, `<name>/skipped` and the method's own figures, all JSON-safe."""
        out: dict[str, Any] = {f"{self.name}/status": self.status}
        if self.skipped_reason is not None:
            out[f"{self.name}/skipped"] = self.skipped_reason
        if self.status != STATUS_SKIPPED:
            out.update(self.method_figures())
        return out

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Lines for the final table (label, text), read from summary.json's figures."""
        status = summary.get(f"{cls.name}/status")
        if status == STATUS_SKIPPED:
            return [(f"{cls.name}", f"skipped: {summary.get(f'{cls.name}/skipped', '')}")]
        return []


def energy_methods(trainer: L.Trainer) -> list[EnergyMethod]:
    return [cb for cb in trainer.callbacks if isinstance(cb, EnergyMethod)]


def announce_structure_change(
    trainer: L.Trainer, pl_module: L.LightningModule, change: StructureChange
) -> None:
    """Tell every callback that the net changed shape.

    Energy methods react through `on_structure_change`. Lightning's own `ModelCheckpoint` and
    `EarlyStopping` have no such hook, so their best-score tracking is restarted here, in the
    one place that knows about them, when `change.restart_best` is set.
    """
    for method in energy_methods(trainer):
        if method.name != change.source:
            method.on_structure_change(trainer, pl_module, change)
    if not change.restart_best:
        return
    for cb in trainer.checkpoint_callbacks:
        forget_best_checkpoints(cb, trainer)
    for cb in trainer.early_stopping_callbacks:  # patience restarts: the net must recover first
        cb.wait_count = 0
        cb.best_score = torch.tensor(torch.inf if cb.mode == "min" else -torch.inf)


def forget_best_checkpoints(cb: Any, trainer: L.Trainer) -> None:
    """Restart a ModelCheckpoint's best tracking: checkpoints of a wider net no longer compete.

    Its tracked top-k files (the old net's) are deleted, as it would have deleted them once
    beaten; `last.ckpt` stays.
    """
    if not getattr(cb, "monitor", None) or not hasattr(cb, "best_k_models"):
        return
    for path in list(cb.best_k_models):
        if path != getattr(cb, "last_model_path", None):
            trainer.strategy.remove_checkpoint(path)
    cb.best_k_models = {}
    cb.kth_best_model_path = ""
    cb.best_model_score = None
    cb.best_model_path = ""
    inf = torch.tensor(torch.inf)
    cb.kth_value = inf if cb.mode == "min" else -inf
