"""Mixed precision chosen for the hardware, TF32 matmuls, channels_last: `+optim=amp`.

What it does: picks the Trainer's precision for its device (`bf16-mixed` where bf16 is native,
`16-mixed` on Volta/Turing, `32-true` elsewhere), and with `precision: auto` measures the offered
mixed precision (and FP8 where planned) against 32-true in the fit's first steps, keeping the
cheaper; TF32 for the fp32 matmuls left on GPUs of capability >= 8.0; channels_last for conv nets
(again after a structure change); counts fp16 skipped steps and stops a run whose loss stays
NaN/inf. The card (README.md beside this file) gives the table, the figures and the limits.

Wiring: the Trainer's precision is fixed when it is built, so the method declares it through
the contract's `trainer_settings` (methods/base.py) and the run's builder passes it on.

The parts beside it: `settings` (the keys), `hardware` (the precision table, TF32 and
channels_last switches), `trial` (the fit-start measurement), `counters` (per-step bookkeeping
on the device) and `fp8` (the FP8 gate and layer swap).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch
from torch import nn

from wattwise.compat import torch as compat_torch
from wattwise.methods.amp import fp8 as fp8_module
from wattwise.methods.amp.counters import StepCounters, nonfinite_message
from wattwise.methods.amp.hardware import (
    Tf32State,
    choose_precision,
    enable_tf32,
    has_conv,
    precision_plugin,
    resolve_device_type,
    restore_tf32,
    tf32_capable,
    to_channels_last,
)
from wattwise.methods.amp.settings import KEY, AmpSettings
from wattwise.methods.amp.trial import FP8, Trial, cheaper, plan_trial
from wattwise.methods.base import EnergyMethod, StructureChange

log = logging.getLogger(__name__)


# ---- what reads the host (tests pin these here) ----------------------------------------------------
def fp8_device(device: torch.device) -> tuple[str, tuple[int, int] | None]:
    """(device type, CUDA compute capability or None) of the Trainer's device, for the FP8 gate."""
    if device.type == "cuda":
        return "cuda", tuple(torch.cuda.get_device_capability(device))
    return device.type, None


def cpu_bf16_supported() -> bool:
    """Does this CPU run bf16 natively (oneDNN's own answer, else AVX512-BF16/AMX flags)?"""
    try:
        return compat_torch.onednn_bf16_supported()
    except (AttributeError, RuntimeError):
        pass
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, name, None)
        if check is not None and check():
            return True
    return False


def detect(accelerator: str | None = "auto") -> tuple[str, tuple[int, int] | None, bool]:
    """(device_type, cuda_capability, bf16_supported) of the device the Trainer will use."""
    device_type = resolve_device_type(accelerator)
    if device_type == "cuda" and torch.cuda.is_available():
        capability = tuple(torch.cuda.get_device_capability())
        return device_type, capability, bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device_type == "cpu":
        return device_type, None, cpu_bf16_supported()
    return device_type, None, False


def auto_precision(precision: str = "auto", accelerator: str | None = "auto") -> str:
    """The Trainer's `precision` string for `callbacks.amp.precision` on the given accelerator."""
    AmpSettings.build(KEY, precision=precision)  # one line naming the key if it is not a choice
    if precision != "auto":
        return precision
    chosen = choose_precision(*detect(accelerator))
    log.info("amp: precision %s chosen for %s", chosen, resolve_device_type(accelerator))
    return chosen


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss stayed NaN/inf, so further steps would only spend energy."""


class Amp(EnergyMethod):
    """TF32, channels_last, fp16 skipped-step counting and a non-finite-loss stop.

    Args (config keys `callbacks.amp.*`, checked by `AmpSettings`):
        precision: `auto` or a Lightning precision; turned into the Trainer's precision by
            `trainer_settings` when the Trainer is built. The callback reports what it really uses.
        tf32: allow TF32 for fp32 matmuls and convolutions on GPUs with compute capability >= 8.0.
        channels_last: store conv nets' weights and 4-D inputs channels_last.
        max_nonfinite_steps: stop (raise NonFiniteLossError) once the training loss has been
            NaN/inf for this many consecutive steps; 0 disables the check. The count lives on the
            device and is read once every this many steps, never per step.
        measure_steps: with `precision: auto`, steps each candidate precision is measured for at
            fit start before the cheaper is kept (0: trust the hardware table).
        fp8: `auto`: where the run trains in bf16-mixed on a card with FP8 tensor cores, the
            Linear layers torchao's shape guidance says gain (fp8.py) are tried in FP8
            against bf16 at fit start and kept only if cheaper; `off`: never.
        fp8_recipe: torchao's FP8 scaling recipe, `tensorwise` or `rowwise`.
        if_not_applicable: `fail` or `skip` (see methods/base.py); amp applies to every net.
    """

    name = "amp"
    figure_prefix = "amp/"
    summary_keys = ("amp/precision", "amp/tf32", "amp/channels_last", "amp/nonfinite_steps")
    recipes = {"green": {}}

    # Devices whose tensors are read without waiting on a queue: the loss is checked at once there.
    immediate_devices: tuple[str, ...] = ("cpu",)

    def __init__(
        self,
        precision: str = "auto",
        tf32: bool = True,
        channels_last: bool = True,
        max_nonfinite_steps: int = 20,
        measure_steps: int = 4,
        fp8: str = "auto",
        fp8_recipe: str = "tensorwise",
        if_not_applicable: str = "fail",
    ) -> None:
        super().__init__(if_not_applicable)
        fields = AmpSettings.__dataclass_fields__
        self.settings = s = AmpSettings.build(KEY, **{k: v for k, v in locals().items() if k in fields})
        self.precision, self.measure_steps = s.precision, s.measure_steps
        self.chosen_precision: str | None = None
        self.measured: dict[str, float] = {}  # candidate precision -> cost per step
        self.measure_unit: str | None = None  # "J/step" or "s/step"
        self.measure_note: str | None = None  # why nothing was measured, when it was not
        self.fp8_layers: list[str] = []  # the planned FP8 layers, once the gate has passed
        self.fp8_note: str | None = None  # why no layer trains in FP8, or the plan
        self._fp8_originals: dict[str, nn.Module] = {}  # swapped-out Linear layers, to swap back
        self._trial: Trial | None = None  # the fit-start measurement, while it runs
        self._resumed_choice: str | None = None
        self.tf32_enabled = self.channels_last_enabled = False
        self._saved_tf32: Tf32State | None = None  # what enable_tf32 found, for teardown
        self._hook: Any = None
        self._relayout = False
        self.counts = StepCounters(s.max_nonfinite_steps)

    # ---- the contract ----------------------------------------------------------------------
    def trainer_settings(self, trainer_cfg: Any) -> dict[str, Any]:
        """The Trainer's precision: `precision`, or for `auto` the best one for its accelerator."""
        return {"precision": auto_precision(self.precision, trainer_cfg.get("accelerator", "auto"))}

    def on_structure_change(
        self, trainer: L.Trainer, pl_module: L.LightningModule, change: StructureChange
    ) -> None:
        self._relayout = self.channels_last_enabled  # rebuilt layers get channels_last at the next batch
        if self._fp8_originals or self.fp8_layers:  # the planned widths are gone: bf16 from here on
            self._fp8_swap(trainer, on=False)
            self.fp8_layers = []
            self.fp8_note = "dropped after a structure change (the net was pruned)"
            if self.chosen_precision == FP8:
                self.chosen_precision = "bf16-mixed"

    # ---- measuring the candidates at fit start ------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._resumed_choice is not None:  # decided before the checkpoint: keep that choice
            self._use(trainer, self._resumed_choice)
            return
        plan = plan_trial(
            self.precision,
            str(self.chosen_precision),
            bool(self.fp8_layers),
            self.measure_steps,
            trainer.num_training_batches,
        )
        if plan.fp8_note is not None:
            self.fp8_note = plan.fp8_note
        if plan.measure_note is not None:
            self.measure_note = plan.measure_note
            log.info("amp: %s; keeping %s", self.measure_note, self.chosen_precision)
        if plan.candidates:
            self._trial = Trial(plan.candidates, self.measure_steps)

    def _fp8_swap(self, trainer: L.Trainer, on: bool) -> None:
        """The planned Linear layers to FP8 (on) or back to the originals (off); Parameters stay."""
        net = trainer.lightning_module
        if on and not self._fp8_originals:
            self._fp8_originals = fp8_module.swap_to_fp8(net, self.fp8_layers, self.settings.fp8_recipe)
        elif not on and self._fp8_originals:
            fp8_module.swap_back(net, self._fp8_originals)
            self._fp8_originals = {}

    def _use(self, trainer: L.Trainer, choice: str) -> None:
        """Switch the Trainer's precision plugin between steps (safe for these plugins: no state)."""
        if choice == FP8 and not self.fp8_layers:  # resumed where the FP8 gate does not pass
            choice = "bf16-mixed"
        self._fp8_swap(trainer, on=choice == FP8)
        plugin_choice = "bf16-mixed" if choice == FP8 else choice
        if str(trainer.precision) == plugin_choice:
            self.chosen_precision = choice
            return
        plugin = precision_plugin(plugin_choice, trainer.strategy.root_device.type)
        trainer.strategy.precision_plugin = plugin
        self.chosen_precision = choice

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def _meter(self) -> Any:
        meter = getattr(self.energy_monitor, "meter", None)
        return meter if meter is not None and meter.source != "off" else None

    def _trial_batch(self, trainer: L.Trainer, trial: Trial) -> None:
        """One step of the trial: what `Trial.advance` says this batch does."""
        event = trial.advance()
        if event == "switch":
            self._use(trainer, trial.candidates[0])
        elif event == "begin":
            self._sync(trainer)
            if (meter := self._meter()) is not None:
                meter.begin("wattwise.amp.trial")
            trial.started = time.perf_counter()
        elif event == "end":
            self._sync(trainer)
            seconds = (time.perf_counter() - trial.started) / self.measure_steps
            meter = self._meter()
            joules = meter.end("wattwise.amp.trial").total_J if meter is not None else None
            trial.costs[trial.candidates.pop(0)] = (joules / self.measure_steps if joules else None), seconds
            if trial.candidates:
                self._trial_batch(trainer, trial)  # the next candidate starts with this step
            else:
                self._decide(trainer, trial)

    def _decide(self, trainer: L.Trainer, trial: Trial) -> None:
        """Keep the cheaper: by energy where every trial read some, else by time per step."""
        self._trial = None
        self.measured, self.measure_unit, choice = cheaper(trial.costs)
        choice = trainer.strategy.broadcast(choice, src=0)  # every rank trains at rank 0's choice
        self._use(trainer, choice)
        if trainer.is_global_zero:
            text = ", ".join(f"{p} {v:.4g} {self.measure_unit}" for p, v in self.measured.items())
            log.info("amp: measured %s: training on in %s", text, choice)

    def state_dict(self) -> dict[str, Any]:
        """The precision chosen (measured or not), so a resumed run keeps it without measuring again."""
        decided = self._trial is None and self.chosen_precision is not None
        return {"precision": self.chosen_precision if decided else None, "measured": dict(self.measured)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_choice = state_dict.get("precision")
        self.measured = dict(state_dict.get("measured") or {})

    # ---- set-up and tear-down -------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        fit = stage == "fit"
        if fit:
            self.counts = StepCounters(self.settings.max_nonfinite_steps)
        self.chosen_precision = str(trainer.precision)
        self.status = "active"
        device = trainer.strategy.root_device
        if fit:
            self._warn_precision(device)
        if self.settings.tf32 and self._saved_tf32 is None and device.type == "cuda":
            if tf32_capable(torch.cuda.get_device_capability(device)):
                self._saved_tf32 = enable_tf32()
                self.tf32_enabled = True
        if fit:
            self._plan_fp8(trainer, pl_module)
        self.channels_last_enabled = self.settings.channels_last and has_conv(pl_module)
        if self.channels_last_enabled and self._hook is None:
            self._hook = pl_module.register_forward_pre_hook(to_channels_last)
        if trainer.is_global_zero and fit:
            log.info(
                "amp: precision %s, TF32 %s, channels_last %s",
                self.chosen_precision,
                "on" if self.tf32_enabled else "off",
                "on" if self.channels_last_enabled else "off",
            )

    def _warn_precision(self, device: torch.device) -> None:
        """Say so when the Trainer's precision is not the one asked for, or is emulated bf16."""
        if self.precision != "auto" and self.chosen_precision != self.precision:
            log.warning(
                "amp: callbacks.amp.precision=%s but the Trainer uses %s (trainer.precision was overridden?)",
                self.precision,
                self.chosen_precision,
            )
        if device.type == "cpu" and self.chosen_precision == "bf16-mixed" and not cpu_bf16_supported():
            log.warning("amp: bf16-mixed on a CPU without native bf16 is emulated and usually slower")

    def _plan_fp8(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The FP8 gate (fp8.gate): the card, the precision, then torchao's shape guidance per layer."""
        s = self.settings
        device = fp8_device(trainer.strategy.root_device)
        self.fp8_layers, self.fp8_note, why = fp8_module.gate(
            s.fp8, str(self.chosen_precision), device, pl_module, s.fp8_recipe
        )
        if why is not None and trainer.is_global_zero:
            log.info("amp: FP8 plan (%s; %s): %s", why, s.fp8_recipe, self.fp8_note)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.channels_last_enabled:  # after the move to the device, before the sanity check
            pl_module.to(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if self._trial is not None:
            self._trial_batch(trainer, self._trial)
        # After a structure change, at the next batch (after every epoch-start hook): cheap, a
        # no-op for tensors already NHWC, and parameters stay the optimizer's objects.
        if self._relayout:
            self._relayout = False
            pl_module.to(memory_format=torch.channels_last)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._saved_tf32 is not None:  # global switches: leave the process as we found it
            restore_tf32(self._saved_tf32)
            self._saved_tf32 = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # ---- per step: device-side bookkeeping only (counters.py) ----------------------------------
    @staticmethod
    def _scaler(trainer: L.Trainer) -> Any:
        return getattr(trainer.precision_plugin, "scaler", None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.counts.count_skipped(self._scaler(trainer))
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        immediate = isinstance(loss, torch.Tensor) and loss.device.type in self.immediate_devices
        run = self.counts.count_loss(loss, immediate)
        if run is not None:
            self._raise_nonfinite(trainer, run)

    def _raise_nonfinite(self, trainer: L.Trainer, run: int) -> None:
        raise NonFiniteLossError(
            nonfinite_message(
                run,
                trainer.current_epoch,
                trainer.global_step,
                str(self.chosen_precision),
                self.settings.max_nonfinite_steps,
            )
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.counts.collect()
        if (run := self.counts.check()) is not None:
            self._raise_nonfinite(trainer, run)
        if self._scaler(trainer) is not None:
            skipped = self.counts.skipped_steps
            pl_module.log("amp/skipped_steps", float(skipped), on_step=False, on_epoch=True)
            if skipped:
                log.info("amp: %d optimizer steps skipped so far (fp16 overflow)", skipped)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.teardown(trainer, pl_module, "fit")

    # ---- results ------------------------------------------------------------------------------
    def method_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "amp/precision": self.chosen_precision,
            "amp/measured": dict(self.measured) or self.measure_note,
            "amp/measure_unit": self.measure_unit,
            "amp/tf32": self.tf32_enabled,
            "amp/channels_last": self.channels_last_enabled,
            "amp/nonfinite_steps": self.counts.nonfinite_steps,
            "amp/fp8": sorted(self._fp8_originals) if self.chosen_precision == FP8 else self.fp8_note,
        }
        if self.chosen_precision == "16-mixed":
            out["amp/skipped_steps"] = self.counts.skipped_steps
        return out

    @classmethod
    def report_rows(cls, summary: Any) -> list[tuple[str, str]]:
        rows = super().report_rows(summary)
        if summary.get("amp/precision") is not None:
            text = str(summary["amp/precision"])
            measured, unit = summary.get("amp/measured"), summary.get("amp/measure_unit")
            if isinstance(measured, dict) and measured:
                text += " (measured " + ", ".join(f"{p} {v:.3g} {unit}" for p, v in measured.items()) + ")"
            rows.append(("precision (amp)", text))
        return rows
