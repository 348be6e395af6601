"""Per-step bookkeeping kept on the device: fp16 skipped steps and the run of non-finite losses.

Nothing here synchronises per step. The fp16 loss scaler halves its scale exactly when it skipped
a step, so comparing scales on the device counts skips; a NaN/inf loss extends a device-side run
that a finite one resets, read once every `max_nonfinite_steps` steps. On devices whose tensors
are read without a queue (the CPU) the loss is checked at once instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from wattwise.compat import torch as compat_torch


class StepCounters:
    """The counts of one fit; the callback raises when `count_loss` or `check` returns a run."""

    def __init__(self, max_nonfinite_steps: int) -> None:
        self.max_nonfinite_steps = max_nonfinite_steps
        self.skipped_steps = 0
        self.nonfinite_steps = 0
        self._prev_scale: torch.Tensor | None = None
        self._skipped_dev: torch.Tensor | None = None  # device-side counters: no sync per step
        self._nonfinite_dev: torch.Tensor | None = None
        self._run_dev: torch.Tensor | None = None
        self._steps_since_check = 0
        self._run_cpu = 0

    def count_skipped(self, scaler: Any) -> None:
        """GradScaler halves its scale exactly when it skipped a step for inf/NaN gradients."""
        scale = compat_torch.grad_scale(scaler)
        if not isinstance(scale, torch.Tensor):
            return
        if self._prev_scale is None and (init := compat_torch.initial_grad_scale(scaler)) is not None:
            self._prev_scale = torch.full_like(scale, init)  # the scale before step 1
        if self._prev_scale is not None and self._prev_scale.device == scale.device:
            dropped = (scale < self._prev_scale).to(torch.int64)
            self._skipped_dev = dropped if self._skipped_dev is None else self._skipped_dev + dropped
        self._prev_scale = scale.detach().clone()

    def count_loss(self, loss: Any, immediate: bool) -> int | None:
        """Count this step's loss; the run of non-finite losses once it reached the limit, else None."""
        if not self.max_nonfinite_steps or not isinstance(loss, torch.Tensor):
            return None
        if immediate:  # no device to wait for: count in Python and check at once
            finite = math.isfinite(float(loss.detach()))
            self._run_cpu = 0 if finite else self._run_cpu + 1
            self.nonfinite_steps += 0 if finite else 1
            return self._run_cpu if self._run_cpu >= self.max_nonfinite_steps else None
        bad = (~torch.isfinite(loss.detach())).to(torch.int64).reshape(())
        if self._run_dev is None:
            self._run_dev, self._nonfinite_dev = bad.clone(), bad.clone()
        else:
            self._run_dev = (self._run_dev + bad) * bad  # consecutive count, reset by a finite loss
            self._nonfinite_dev = self._nonfinite_dev + bad
        self._steps_since_check += 1
        if self._steps_since_check < self.max_nonfinite_steps:
            return None
        self._steps_since_check = 0
        return self.check()

    def check(self) -> int | None:
        """The device-side run (one sync), collected, when it reached the limit; else None."""
        if not self.max_nonfinite_steps or self._run_dev is None:
            return None
        run = int(self._run_dev.item())
        if run < self.max_nonfinite_steps:
            return None
        self.collect()
        return run

    def collect(self) -> None:
        """Move the device-side counters into plain ints (once per epoch)."""
        if self._skipped_dev is not None:
            self.skipped_steps += int(self._skipped_dev.item())
            self._skipped_dev = None
        if self._nonfinite_dev is not None:
            self.nonfinite_steps += int(self._nonfinite_dev.item())
            self._nonfinite_dev = torch.zeros_like(self._nonfinite_dev)


def nonfinite_message(
    run: int, epoch: int, global_step: int, precision: str, max_nonfinite_steps: int
) -> str:
    """The one-line stop: where the run diverged, and what to try for its precision."""
    hint = (
        " The fp16 loss scaler cannot fix a forward pass that overflows: try "
        "callbacks.amp.precision=bf16-mixed or 32-true."
        if precision == "16-mixed"
        else " Try a lower learning rate, or callbacks.amp.precision=32-true."
    )
    return (
        f"amp: the training loss was NaN/inf for {run} consecutive steps "
        f"(epoch {epoch}, global step {global_step}, "
        f"precision {precision}); stopping, since further steps "
        f"would only spend energy.{hint} "
        f"(callbacks.amp.max_nonfinite_steps={max_nonfinite_steps})"
    )
