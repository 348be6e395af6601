"""torch.compile where it pays for itself over the run: `+optim=compile`; the card: README.md beside this.

At fit start (after `start_step` steps, once other methods' fit-start trials are done) it measures
eager steps with the run's meter, asks whether even the best case could repay a compile over the
steps the Trainer forecasts (`decision.worth_trying`: if not, nothing is compiled), then compiles
the trainable net in place (`forward.py`), measures the compile and the compiled steps, and keeps
the compiled net only where the saving over the steps left exceeds the compile's cost
(`decision.decide`). Runs with fewer than `min_steps` steps left stay eager without measuring.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import nn

from wattwise.methods.base import STATUS_ACTIVE, EnergyMethod, StructureChange
from wattwise.methods.compile import decision as rules
from wattwise.methods.compile.decision import COMPILE, COMPILED, EAGER, Costs, Decision, Trial
from wattwise.methods.compile.forward import (
    CompiledForward,
    choose_mode,
    install,
    installed,
    static_batches,
    uninstall,
    warm_steps,
)
from wattwise.methods.compile.settings import KEY, CompileSettings
from wattwise.methods.shared.target import target_net

log = logging.getLogger(__name__)

STATUS_COMPILED, STATUS_EAGER = "compiled", "eager"
WINDOW = "wattwise.compile."  # meter window names: + eager, compile, compiled


class Compile(EnergyMethod):
    """Compile the trainable net when, and only when, the measured saving repays the compile.

    Args (config keys `callbacks.compile.*`, checked by `CompileSettings`):
        mode: `auto` (CUDA graphs, `reduce-overhead`, on CUDA where every batch has one shape; else
            `default`), or torch.compile's `default`, `reduce-overhead`, `max-autotune`.
        min_steps: with fewer training steps left at fit start, stay eager without measuring.
        start_step: training steps of the fit before the trial (amp's precision trial runs first).
        measure_steps: steps measured eager, then compiled.
        expected_compile_s: the compile time assumed before paying it (the go/no-go of the best case).
        max_saving: the largest share of an eager step a compiled one is assumed to save (0, 1].
        if_not_applicable: `fail` or `skip` where torch.compile fails or cannot run here.
    """

    name = "compile"
    figure_prefix = "compile/"
    summary_keys = ("compile/kept", "compile/reason", "compile/steps_left", "compile/break_even_steps")
    runs_after = ("prune", "qat")  # they reshape the net at an epoch start; compile the result
    recipes = {"green": {"min_steps": 1000}}

    def __init__(
        self,
        mode: str = "auto",
        min_steps: int = 200,
        start_step: int = 12,
        measure_steps: int = 8,
        expected_compile_s: float = 20.0,
        max_saving: float = 0.5,
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable)
        fields = CompileSettings.__dataclass_fields__
        self.settings = CompileSettings.build(KEY, **{k: v for k, v in locals().items() if k in fields})
        self.mode: str | None = None  # the mode used, once resolved
        self.costs: Costs | None = None
        self.decision: Decision | None = None  # a measured decision (what a checkpoint keeps)
        self.steps_forecast: float | None = None
        self.reason: str = "not decided: the fit has not started"
        self.compile_s: float | None = None
        self._trial: Trial | None = None
        self._net: nn.Module | None = None
        self._forward: CompiledForward | None = None
        self._windows: dict[str, tuple[float, float | None]] = {}  # window -> (seconds, J) per step
        self._started: dict[str, float] = {}
        self._batches = 0  # training batches this fit
        self._plan_pending = False

    # ---- fit start: plan ----------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        self._net = target_net(pl_module)
        self._batches = 0
        device = trainer.strategy.root_device.type
        self.mode = choose_mode(self.settings.mode, device, static_batches(trainer.train_dataloader))
        if self.decision is not None:  # resumed after a measured decision: keep it, measure nothing
            self.status = STATUS_COMPILED if self.decision.kept else STATUS_EAGER
            self.reason = "resumed: " + rules.describe(self.decision, self.costs)
            if self.decision.kept:
                self._install()  # compiles again at the first step (not measured: decided already)
            return
        self._plan(trainer)

    def _forecast(self, trainer: L.Trainer) -> float:
        try:
            estimated = trainer.estimated_stepping_batches
        except (RuntimeError, ValueError, TypeError):
            estimated = math.inf
        return rules.steps_left(estimated, trainer.global_step, trainer.accumulate_grad_batches)

    def _plan(self, trainer: L.Trainer) -> None:
        """Too few steps left: eager at once, nothing measured or compiled; else plan the trial."""
        self.steps_forecast = left = self._forecast(trainer)
        if left < self.settings.min_steps:
            self._keep_eager(
                f"{left:.0f} training steps left < min_steps={self.settings.min_steps}: "
                "too few to repay a compile; nothing measured or compiled"
            )
            return
        trial = Trial(self.settings.measure_steps, warm_steps(str(self.mode)))
        per_epoch = trainer.num_training_batches
        if math.isfinite(per_epoch) and per_epoch < trial.batches():
            self._keep_eager(
                f"epochs of {per_epoch} batches are shorter than the trial ({trial.batches()} batches "
                "in one epoch); nothing measured or compiled"
            )
            return
        self.status = STATUS_ACTIVE
        self.reason = "not decided: the trial did not finish (the fit ended first)"
        self._trial = trial

    def _keep_eager(self, reason: str, trainer: L.Trainer | None = None) -> None:
        self._drop_compiled()
        self._trial = None
        self.status = STATUS_EAGER
        self.reason = reason
        if trainer is None or trainer.is_global_zero:
            log.info("compile: %s", reason)

    # ---- every batch --------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if not self.active:
            return
        self._batches += 1
        if self._plan_pending:
            self._plan_pending = False
            self._plan(trainer)
        if self._forward is not None and self._net is not None and installed(self._net) is None:
            self._install()  # validation and epoch ends run eager; back to compiled for training
        if self._trial is not None and self._trial_may_run(trainer, batch_idx):
            self._trial_step(trainer)

    def _trial_may_run(self, trainer: L.Trainer, batch_idx: int) -> bool:
        """Started, or may start now: past `start_step`, with the whole trial inside this epoch."""
        assert self._trial is not None
        if self._trial.step > 0:
            return True
        if self._batches <= self.settings.start_step:
            return False
        left = trainer.num_training_batches
        return not math.isfinite(left) or left - batch_idx >= self._trial.batches()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        forward = self._forward
        if forward is not None and forward.failure is not None:
            failure = forward.failure
            self._abandon_trial()
            self._drop_compiled()
            self.step_aside(f"torch.compile failed ({failure}); the net trains eager", trainer)

    # ---- the trial ----------------------------------------------------------------------------
    def _meter(self) -> Any:
        meter = getattr(self.energy_monitor, "meter", None)
        return meter if meter is not None and meter.source != "off" else None

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def _begin(self, window: str) -> None:
        if (meter := self._meter()) is not None:
            meter.begin(WINDOW + window)
        self._started[window] = time.perf_counter()

    def _end(self, window: str, steps: int) -> None:
        seconds = time.perf_counter() - self._started.pop(window)
        meter = self._meter()
        joules = meter.end(WINDOW + window).total_J if meter is not None else None
        self._windows[window] = (seconds / steps, joules / steps if joules else None)

    def _trial_step(self, trainer: L.Trainer) -> None:
        """This batch start's events: close and open windows; go/no-go; compile; decide."""
        trial = self._trial
        assert trial is not None
        events = trial.advance()
        if events:
            self._sync(trainer)
        for what, window in events:
            if what == "end":
                self._end(window, trial.warm if window == COMPILE else trial.measure)
                if window == EAGER and not self._go(trainer):
                    return
                if window == COMPILED:
                    self._decide(trainer)
                    return
            else:
                if window == COMPILE:
                    self._install()
                self._begin(window)

    def _unit(self) -> str:
        return "J" if all(j for _, j in self._windows.values()) else "s"

    def _cost(self, window: str, unit: str) -> float:
        seconds, joules = self._windows[window]
        return float(joules) if unit == "J" and joules else seconds

    def _go(self, trainer: L.Trainer) -> bool:
        """Before compiling: could the best case repay a compile of `expected_compile_s`?"""
        s, unit = self.settings, self._unit()
        eager = self._cost(EAGER, unit)
        left = self.steps_forecast = self._forecast(trainer)
        expected = rules.expected_compile_cost(s.expected_compile_s, eager, self._windows[EAGER][0], unit)
        go = rules.worth_trying(eager, expected, left, s.max_saving)
        go = bool(trainer.strategy.broadcast(go, src=0))
        if not go:
            self._keep_eager(
                f"eager {eager:.4g} {unit}/step: even {s.max_saving:.0%} saved on each of {left:.0f} steps "
                f"left would not repay a compile of ~{expected:.4g} {unit} "
                f"(expected_compile_s={s.expected_compile_s:g}); nothing compiled",
                trainer,
            )
        return go

    def _decide(self, trainer: L.Trainer) -> None:
        unit = self._unit()
        eager, compiled = self._cost(EAGER, unit), self._cost(COMPILED, unit)
        compile_cost = max(0.0, (self._cost(COMPILE, unit) - eager) * self._trial.warm)
        self.compile_s = max(0.0, (self._windows[COMPILE][0] - self._windows[EAGER][0]) * self._trial.warm)
        self.costs = Costs(eager, compiled, compile_cost, unit)
        decided = rules.decide(self.costs, float(self.steps_forecast or 0.0))
        kept = bool(trainer.strategy.broadcast(decided.kept, src=0))  # every rank as rank 0
        self.decision = Decision(kept, decided.break_even_steps, decided.steps_left, decided.saving_per_step)
        self._trial = None
        text = rules.describe(self.decision, self.costs)
        if kept:
            self.status, self.reason = STATUS_COMPILED, text
            if trainer.is_global_zero:
                log.info("compile: %s (mode %s)", text, self.mode)
        else:
            self._keep_eager(text, trainer)

    def _abandon_trial(self) -> None:
        meter = self._meter()
        for window in list(self._started):
            self._started.pop(window)
            if meter is not None and meter.is_open(WINDOW + window):
                meter.end(WINDOW + window)
        self._trial = None

    # ---- the compiled net in place -------------------------------------------------------------
    def _install(self) -> None:
        if self._net is None:
            return
        if self._forward is None:
            self._forward = CompiledForward(self._net, str(self.mode))
        install(self._net, self._forward)

    def _drop_compiled(self) -> None:
        if self._net is not None:
            uninstall(self._net)
        self._forward = None

    def _eager_for_now(self) -> None:
        if self._net is not None:
            uninstall(self._net)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eager_for_now()  # validation runs eager: a compile for eval mode would not pay

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eager_for_now()  # epoch-start hooks (prune, qat) see and copy the eager net

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._abandon_trial()
        if self.status == STATUS_ACTIVE:  # the trial never finished: the fit trained eager
            self.status = STATUS_EAGER
        self._eager_for_now()  # the net leaves the fit as it came: test and exports run eager

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.on_fit_end(trainer, pl_module)

    def on_structure_change(
        self, trainer: L.Trainer, pl_module: L.LightningModule, change: StructureChange
    ) -> None:
        """The measured costs were the old net's: back to eager and decide again at the next batch."""
        if not self.active:
            return
        self._abandon_trial()
        self._drop_compiled()
        self._net = target_net(pl_module)
        self.decision, self.costs, self.compile_s = None, None, None
        self._plan_pending = True
        self.status = STATUS_ACTIVE
        self.reason = f"not decided again after the structure change by {change.source}"

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A measured decision, so a resumed run keeps it without measuring again (nothing else)."""
        if self.decision is None or self.costs is None:
            return {"decision": None}
        d, c = self.decision, self.costs
        return {
            "decision": {"kept": d.kept, "break_even_steps": d.break_even_steps, "steps_left": d.steps_left},
            "costs": {"eager": c.eager, "compiled": c.compiled, "compile": c.compile, "unit": c.unit},
            "compile_s": self.compile_s,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        saved, costs = state_dict.get("decision"), state_dict.get("costs")
        if not saved or not costs:
            return
        self.costs = Costs(**costs)
        saving = self.costs.eager - self.costs.compiled
        self.decision = Decision(bool(saved["kept"]), saved["break_even_steps"], saved["steps_left"], saving)
        self.compile_s = state_dict.get("compile_s")

    # ---- results ------------------------------------------------------------------------------
    def method_figures(self) -> dict[str, Any]:
        c, d = self.costs, self.decision
        return {
            "compile/kept": bool(d.kept) if d is not None else False,
            "compile/reason": self.reason,
            "compile/mode": self.mode,
            "compile/steps_left": self.steps_forecast if d is None else d.steps_left,
            "compile/break_even_steps": d.break_even_steps if d is not None else None,
            "compile/unit": c.unit if c is not None else None,
            "compile/compile_cost": c.compile if c is not None else None,
            "compile/compile_s": self.compile_s,
            "compile/eager_per_step": c.eager if c is not None else None,
            "compile/compiled_per_step": c.compiled if c is not None else None,
        }

    @classmethod
    def report_rows(cls, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        if summary.get("compile/reason") is not None and summary.get("compile/status") != "skipped":
            rows.append(("torch.compile", str(summary["compile/reason"])))
        return rows
