"""Mixed precision chosen for the hardware, TF32 matmuls, channels_last: `+optim=amp`.

Method card
-----------
What it does
    Picks the training precision for the device the Trainer will use (`choose_precision`):
    `bf16-mixed` on GPUs with bfloat16 (Ampere, Hopper and newer) and on CPUs with native
    bf16 instructions (AVX512-BF16 / AMX); `16-mixed` with loss scaling on Volta and Turing;
    `32-true` elsewhere. On GPUs with compute capability >= 8.0 it also lets the fp32 matmuls
    and convolutions that remain outside autocast use TF32. For conv nets it stores weights and
    inputs channels_last (NHWC), the layout tensor cores and oneDNN prefer.
What it saves
    Fewer joules per sample through faster steps at lower power. On one H100, ResNet-18 at
    batch 256: 85.9 mJ/sample in strict fp32, 27.9 with TF32, 18.4 with bf16 autocast,
    13.0 with bf16 + channels_last (an H100 probe made for this
    project; see the card, README.md beside this file, and bench/RESULTS.md for this project's own figures.
What it costs
    bf16 keeps 8 mantissa bits: accuracy is usually unchanged, but check it on your task.
    fp16 can overflow: the loss scaler then skips the step (counted as `amp/skipped_steps`).
Measured, not assumed
    Whether mixed precision pays depends on the net as much as on the hardware: on a CPU with
    native bf16 it saved energy on a CNN and a small Transformer but made a GRU 1.57x dearer
    (recurrent kernels gain nothing from bf16 there). So with `precision: auto`, where the
    hardware table offers a mixed precision, the first steps of the fit try it and 32-true for
    `measure_steps` steps each (after one warm-up step each), read the energy of each trial
    through the run's energy monitor (wall time where the monitor reads nothing that short), and
    the fit goes on with the cheaper; `amp/measured` holds what was measured. A forced
    precision, or `measure_steps: 0`, skips the trial.
When not to use it
    On a CPU without native bf16: emulated bf16 is slower (2x for an MLP, 15x for a small CNN
    on an AVX2-only EPYC), so `auto` keeps 32-true there. Models that need fp32 range
    everywhere (some losses, very small learning-rate updates): set precision to 32-true.
How it composes
    Independent of early stopping and power tuning. With pruning: when a pruner announces a
    structure change, channels_last is re-applied at the next batch, so rebuilt layers keep
    the layout.

Wiring
    The Trainer's precision is fixed when it is built: the method declares it through the
    contract's `trainer_settings` (see methods/base.py), and the run's builder passes it to the
    Trainer. No config node of another group is touched.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
from torch import nn

from wattwise.compat import torch as compat_torch
from wattwise.methods.base import EnergyMethod, StructureChange
from wattwise.utils.errors import ConfigError, require_int

log = logging.getLogger(__name__)

PRECISION_CHOICES = ("auto", "bf16-mixed", "16-mixed", "32-true")
_MIXED = ("bf16-mixed", "16-mixed")
FP8 = "bf16-mixed+fp8"  # the trial candidate: bf16 autocast, the planned Linear layers in FP8
FP8_CHOICES = ("auto", "off")


def fp8_device(device: torch.device) -> tuple[str, tuple[int, int] | None]:
    """(device type, CUDA compute capability or None) of the Trainer's device, for the FP8 gate."""
    if device.type == "cuda":
        return "cuda", tuple(torch.cuda.get_device_capability(device))
    return device.type, None


def choose_precision(device_type: str, cuda_capability: tuple[int, int] | None, bf16_supported: bool) -> str:
    """The Lightning precision for a device (pure: no hardware queries).

    Args:
        device_type: `cpu`, `cuda`, `mps`, ...
        cuda_capability: (major, minor) compute capability for `cuda`, else None.
        bf16_supported: whether the device runs bfloat16 natively (GPU: bf16 tensor cores;
            CPU: AVX512-BF16/AMX, i.e. without emulation).
    """
    if device_type == "cuda":
        if cuda_capability is None:
            return "32-true"
        if tuple(cuda_capability) >= (8, 0) and bf16_supported:
            return "bf16-mixed"
        if tuple(cuda_capability) >= (7, 0):  # Volta/Turing: fp16 tensor cores, no bf16
            return "16-mixed"
        return "32-true"  # Pascal and older: no tensor cores, little to gain
    # CPU (and other devices): bf16 autocast only where the hardware does bf16 natively.
    return "bf16-mixed" if bf16_supported else "32-true"


def tf32_capable(cuda_capability: tuple[int, int] | None) -> bool:
    """TF32 tensor cores exist from Ampere (compute capability 8.0) on."""
    return cuda_capability is not None and tuple(cuda_capability) >= (8, 0)


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


def resolve_device_type(accelerator: str | None) -> str:
    """The device type Lightning's `accelerator` setting will give (`auto` follows Lightning's order)."""
    acc = str(accelerator or "auto").lower()
    if acc in ("gpu", "cuda"):
        return "cuda"
    if acc == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    return acc


def detect(accelerator: str | None = "auto") -> tuple[str, tuple[int, int] | None, bool]:
    """(device_type, cuda_capability, bf16_supported) of the device the Trainer will use."""
    device_type = resolve_device_type(accelerator)
    if device_type == "cuda" and torch.cuda.is_available():
        capability = tuple(torch.cuda.get_device_capability())
        return device_type, capability, bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device_type == "cpu":
        return device_type, None, cpu_bf16_supported()
    return device_type, None, False


def _check_precision(precision: str) -> None:
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"callbacks.amp.precision must be one of {PRECISION_CHOICES}, got {precision!r}")


def auto_precision(precision: str = "auto", accelerator: str | None = "auto") -> str:
    """The Trainer's `precision` string for `callbacks.amp.precision` on the given accelerator."""
    _check_precision(precision)
    if precision != "auto":
        return precision
    chosen = choose_precision(*detect(accelerator))
    log.info("amp: precision %s chosen for %s", chosen, resolve_device_type(accelerator))
    return chosen


def has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: 4-D tensor inputs to channels_last (a no-op when they already are)."""
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
        for a in args
    )


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss stayed NaN/inf, so further steps would only spend energy."""


class Amp(EnergyMethod):
    """TF32, channels_last, fp16 skipped-step counting and a non-finite-loss stop.

    Args:
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
            Linear layers torchao's shape guidance says gain (optim/fp8.py) are tried in FP8
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
        _check_precision(precision)
        require_int("callbacks.amp.measure_steps", measure_steps, 0)
        if isinstance(max_nonfinite_steps, bool) or not isinstance(max_nonfinite_steps, int):
            raise ConfigError(
                f"callbacks.amp.max_nonfinite_steps must be an integer >= 0, got {max_nonfinite_steps!r}"
            )
        if max_nonfinite_steps < 0:
            raise ConfigError(f"callbacks.amp.max_nonfinite_steps must be >= 0, got {max_nonfinite_steps}")
        if fp8 not in FP8_CHOICES:
            raise ConfigError(f"callbacks.amp.fp8 must be one of {FP8_CHOICES}, got {fp8!r}")
        from wattwise.methods.amp.fp8 import RECIPES

        if fp8_recipe not in RECIPES:
            raise ConfigError(f"callbacks.amp.fp8_recipe must be one of {RECIPES}, got {fp8_recipe!r}")
        self.fp8 = fp8
        self.fp8_recipe = fp8_recipe
        self.fp8_layers: list[str] = []  # the planned FP8 layers, once the gate has passed
        self.fp8_note: str | None = None  # why no layer trains in FP8, or the plan
        self._fp8_originals: dict[str, nn.Module] = {}  # swapped-out Linear layers, to swap back
        self.precision = precision
        self.tf32 = bool(tf32)
        self.channels_last = bool(channels_last)
        self.max_nonfinite_steps = max_nonfinite_steps
        self.measure_steps = measure_steps
        self.chosen_precision: str | None = None
        self.measured: dict[str, float] = {}  # candidate precision -> cost per step
        self.measure_unit: str | None = None  # "J/step" or "s/step"
        self.measure_note: str | None = None  # why nothing was measured, when it was not
        self._trial: list[str] = []  # candidates still to measure, the one running first
        self._trial_step = 0
        self._trial_start = 0.0
        self._trial_costs: dict[str, tuple[float | None, float]] = {}  # candidate -> (J, s) per step
        self._resumed_choice: str | None = None
        self.tf32_enabled = False
        self.channels_last_enabled = False
        self._saved_tf32: tuple[bool, bool, str] | None = None
        self._hook: Any = None
        self._relayout = False
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.skipped_steps = 0
        self.nonfinite_steps = 0
        self._prev_scale: torch.Tensor | None = None
        self._skipped_dev: torch.Tensor | None = None  # device-side counters: no sync per step
        self._nonfinite_dev: torch.Tensor | None = None
        self._run_dev: torch.Tensor | None = None
        self._steps_since_check = 0
        self._run_cpu = 0

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
        candidates = [FP8] if self.fp8_layers else []
        if self.precision == "auto" and self.chosen_precision != "32-true":
            candidates += [str(self.chosen_precision), "32-true"]
        elif candidates:
            candidates.append(str(self.chosen_precision))
        if self.measure_steps == 0 or len(candidates) < 2:
            if self.fp8_layers:
                self.fp8_note = "planned but not measured (measure_steps: 0): bf16 kept"
            return
        need = len(candidates) * (self.measure_steps + 1)
        batches = trainer.num_training_batches
        if math.isfinite(batches) and batches < need:
            self.measure_note = f"not measured: {int(batches)} batches per epoch, {need} needed"
            log.info("amp: %s; keeping %s", self.measure_note, self.chosen_precision)
            return
        self._trial, self._trial_step = candidates, 0

    def _fp8_swap(self, trainer: L.Trainer, on: bool) -> None:
        """The planned Linear layers to FP8 (on) or back to the originals (off); Parameters stay."""
        from wattwise.methods.amp import fp8

        net = trainer.lightning_module
        if on and not self._fp8_originals:
            self._fp8_originals = fp8.swap_to_fp8(net, self.fp8_layers, self.fp8_recipe)
        elif not on and self._fp8_originals:
            fp8.swap_back(net, self._fp8_originals)
            self._fp8_originals = {}

    def _use(self, trainer: L.Trainer, choice: str) -> None:
        """Switch the Trainer's precision plugin between steps (safe for these plugins: no state)."""
        from lightning.pytorch.plugins.precision import MixedPrecision, Precision

        if choice == FP8 and not self.fp8_layers:  # resumed where the FP8 gate does not pass
            choice = "bf16-mixed"
        self._fp8_swap(trainer, on=choice == FP8)
        plugin_choice = "bf16-mixed" if choice == FP8 else choice
        if str(trainer.precision) == plugin_choice:
            self.chosen_precision = choice
            return
        device = trainer.strategy.root_device.type
        if choice == "32-true":
            plugin = Precision()
        elif choice == "16-mixed":
            plugin = MixedPrecision("16-mixed", device, scaler=torch.amp.GradScaler(device))
        else:
            plugin = MixedPrecision(plugin_choice, device)
        trainer.strategy.precision_plugin = plugin
        self.chosen_precision = choice

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def _meter(self, trainer: L.Trainer) -> Any:
        meter = getattr(self.energy_monitor, "meter", None)
        return meter if meter is not None and meter.source != "off" else None

    def _begin_trial(self, trainer: L.Trainer) -> None:
        self._sync(trainer)
        if (meter := self._meter(trainer)) is not None:
            meter.begin("wattwise.amp.trial")
        self._trial_start = time.perf_counter()

    def _end_trial(self, trainer: L.Trainer) -> tuple[float | None, float]:
        """(joules, seconds) per measured step of the trial that just ended."""
        self._sync(trainer)
        seconds = (time.perf_counter() - self._trial_start) / self.measure_steps
        meter = self._meter(trainer)
        joules = meter.end("wattwise.amp.trial").total_J if meter is not None else None
        return (joules / self.measure_steps if joules else None), seconds

    def _trial_batch(self, trainer: L.Trainer) -> None:
        """One step of the trial: warm-up, then `measure_steps` measured steps per candidate."""
        k = self._trial_step
        if k == 0:
            self._use(trainer, self._trial[0])
        elif k == 1:
            self._begin_trial(trainer)
        elif k == 1 + self.measure_steps:
            self._trial_costs[self._trial.pop(0)] = self._end_trial(trainer)
            self._trial_step = 0
            if self._trial:
                self._trial_batch(trainer)  # the next candidate starts with this step
                return
            self._decide(trainer)
            return
        self._trial_step += 1

    def _decide(self, trainer: L.Trainer) -> None:
        """Keep the cheaper: by energy where every trial read some, else by time per step."""
        by_energy = all(j for j, _ in self._trial_costs.values())
        self.measure_unit = "J/step" if by_energy else "s/step"
        self.measured = {p: (j if by_energy else sec) for p, (j, sec) in self._trial_costs.items()}
        choice = min(self.measured, key=self.measured.get)
        choice = trainer.strategy.broadcast(choice, src=0)  # every rank trains at rank 0's choice
        self._use(trainer, choice)
        if trainer.is_global_zero:
            text = ", ".join(f"{p} {v:.4g} {self.measure_unit}" for p, v in self.measured.items())
            log.info("amp: measured %s: training on in %s", text, choice)

    def state_dict(self) -> dict[str, Any]:
        """The precision chosen (measured or not), so a resumed run keeps it without measuring again."""
        decided = not self._trial and self.chosen_precision is not None
        return {"precision": self.chosen_precision if decided else None, "measured": dict(self.measured)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_choice = state_dict.get("precision")
        self.measured = dict(state_dict.get("measured") or {})

    # ---- set-up and tear-down -------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self._reset_counts()
        self.chosen_precision = str(trainer.precision)
        self.status = "active"
        device = trainer.strategy.root_device
        if stage == "fit" and self.precision != "auto" and self.chosen_precision != self.precision:
            log.warning(
                "amp: callbacks.amp.precision=%s but the Trainer uses %s (trainer.precision was overridden?)",
                self.precision,
                self.chosen_precision,
            )
        emulated = device.type == "cpu" and self.chosen_precision == "bf16-mixed" and not cpu_bf16_supported()
        if stage == "fit" and emulated:
            log.warning("amp: bf16-mixed on a CPU without native bf16 is emulated and usually slower")
        if (
            self.tf32
            and self._saved_tf32 is None
            and device.type == "cuda"
            and tf32_capable(torch.cuda.get_device_capability(device))
        ):
            self._saved_tf32 = (
                torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32,
                torch.get_float32_matmul_precision(),
            )
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.set_float32_matmul_precision("high")
            self.tf32_enabled = True
        if stage == "fit":
            self._plan_fp8(trainer, pl_module)
        self.channels_last_enabled = self.channels_last and has_conv(pl_module)
        if self.channels_last_enabled and self._hook is None:
            self._hook = pl_module.register_forward_pre_hook(_to_channels_last)
        if trainer.is_global_zero and stage == "fit":
            log.info(
                "amp: precision %s, TF32 %s, channels_last %s",
                self.chosen_precision,
                "on" if self.tf32_enabled else "off",
                "on" if self.channels_last_enabled else "off",
            )

    def _plan_fp8(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The FP8 gate: the card, the precision, then torchao's shape guidance per layer."""
        from wattwise.methods.amp import fp8

        self.fp8_layers = []
        if self.fp8 == "off":
            self.fp8_note = "off (callbacks.amp.fp8)"
            return
        if self.chosen_precision != "bf16-mixed":
            self.fp8_note = (
                f"not tried: the run trains in {self.chosen_precision}, FP8 is tried against bf16-mixed"
            )
            return
        supported, why = fp8.fp8_support(*fp8_device(trainer.strategy.root_device))
        if not supported:
            self.fp8_note = f"not tried: {why}"
            return
        from wattwise.compat.torchao import INSTALL_HINT
        from wattwise.compat.torchao import available as torchao_available

        if not torchao_available():
            self.fp8_note = f"not tried: {INSTALL_HINT}"
            return
        plan = fp8.plan_fp8_layers(pl_module, self.fp8_recipe)
        self.fp8_layers = list(plan.fp8)
        self.fp8_note = plan.describe()
        if trainer.is_global_zero:
            log.info("amp: FP8 plan (%s; %s): %s", why, self.fp8_recipe, self.fp8_note)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.channels_last_enabled:  # after the move to the device, before the sanity check
            pl_module.to(memory_format=torch.channels_last)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if self._trial:
            self._trial_batch(trainer)
        # After a structure change, at the next batch (after every epoch-start hook): cheap, a
        # no-op for tensors already NHWC, and parameters stay the optimizer's objects.
        if self._relayout:
            self._relayout = False
            pl_module.to(memory_format=torch.channels_last)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._saved_tf32 is not None:  # global switches: leave the process as we found it
            matmul, cudnn, matmul_precision = self._saved_tf32
            torch.set_float32_matmul_precision(matmul_precision)
            torch.backends.cuda.matmul.allow_tf32 = matmul
            torch.backends.cudnn.allow_tf32 = cudnn
            self._saved_tf32 = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # ---- per step: device-side bookkeeping only ----------------------------------------------
    @staticmethod
    def _scaler(trainer: L.Trainer) -> Any:
        return getattr(trainer.precision_plugin, "scaler", None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        scaler = self._scaler(trainer)
        scale = compat_torch.grad_scale(scaler)
        if isinstance(scale, torch.Tensor):
            # GradScaler halves its scale exactly when it skipped a step for inf/NaN gradients.
            if self._prev_scale is None and (init := compat_torch.initial_grad_scale(scaler)) is not None:
                self._prev_scale = torch.full_like(scale, init)  # the scale before step 1
            if self._prev_scale is not None and self._prev_scale.device == scale.device:
                dropped = (scale < self._prev_scale).to(torch.int64)
                self._skipped_dev = dropped if self._skipped_dev is None else self._skipped_dev + dropped
            self._prev_scale = scale.detach().clone()
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        immediate = isinstance(loss, torch.Tensor) and loss.device.type in self.immediate_devices
        if self.max_nonfinite_steps and immediate:
            # On the CPU there is no device to wait for: count in Python and check at once.
            finite = math.isfinite(float(loss.detach()))
            self._run_cpu = 0 if finite else self._run_cpu + 1
            self.nonfinite_steps += 0 if finite else 1
            if self._run_cpu >= self.max_nonfinite_steps:
                self._raise_nonfinite(trainer, self._run_cpu)
        elif self.max_nonfinite_steps and isinstance(loss, torch.Tensor):
            bad = (~torch.isfinite(loss.detach())).to(torch.int64).reshape(())
            if self._run_dev is None:
                self._run_dev, self._nonfinite_dev = bad.clone(), bad.clone()
            else:
                self._run_dev = (self._run_dev + bad) * bad  # consecutive count, reset by a finite loss
                self._nonfinite_dev = self._nonfinite_dev + bad
            self._steps_since_check += 1
            if self._steps_since_check >= self.max_nonfinite_steps:
                self._steps_since_check = 0
                self._check_nonfinite(trainer)

    def _check_nonfinite(self, trainer: L.Trainer) -> None:
        run = int(self._run_dev.item()) if self._run_dev is not None else 0  # one sync per N steps
        if run >= self.max_nonfinite_steps:
            self._collect()
            self._raise_nonfinite(trainer, run)

    def _raise_nonfinite(self, trainer: L.Trainer, run: int) -> None:
        hint = (
            " The fp16 loss scaler cannot fix a forward pass that overflows: try "
            "callbacks.amp.precision=bf16-mixed or 32-true."
            if self.chosen_precision == "16-mixed"
            else " Try a lower learning rate, or callbacks.amp.precision=32-true."
        )
        raise NonFiniteLossError(
            f"amp: the training loss was NaN/inf for {run} consecutive steps "
            f"(epoch {trainer.current_epoch}, global step {trainer.global_step}, "
            f"precision {self.chosen_precision}); stopping, since further steps "
            f"would only spend energy.{hint} "
            f"(callbacks.amp.max_nonfinite_steps={self.max_nonfinite_steps})"
        )

    def _collect(self) -> None:
        """Move the device-side counters into plain ints (once per epoch)."""
        if self._skipped_dev is not None:
            self.skipped_steps += int(self._skipped_dev.item())
            self._skipped_dev = None
        if self._nonfinite_dev is not None:
            self.nonfinite_steps += int(self._nonfinite_dev.item())
            self._nonfinite_dev = torch.zeros_like(self._nonfinite_dev)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collect()
        if self.max_nonfinite_steps and self._run_dev is not None:
            self._check_nonfinite(trainer)
        if self._scaler(trainer) is not None:
            pl_module.log("amp/skipped_steps", float(self.skipped_steps), on_step=False, on_epoch=True)
            if self.skipped_steps:
                log.info("amp: %d optimizer steps skipped so far (fp16 overflow)", self.skipped_steps)

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
            "amp/nonfinite_steps": self.nonfinite_steps,
            "amp/fp8": sorted(self._fp8_originals) if self.chosen_precision == FP8 else self.fp8_note,
        }
        if self.chosen_precision == "16-mixed":
            out["amp/skipped_steps"] = self.skipped_steps
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
