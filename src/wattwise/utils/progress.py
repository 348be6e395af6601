"""The run's progress display: Lightning's tqdm bar in a terminal, one line per epoch in a log.

In a terminal (stdout is a TTY) the display is Lightning's `TQDMProgressBar`, unchanged. Where
stdout is not a terminal (CI, a SLURM job's output file, `python train.py > run.log`), a tqdm bar
would write a carriage-return frame every `refresh_rate` batches: hundreds of kilobytes of frames
that a log viewer shows as one endless line. `LineProgress` writes instead one plain line per
epoch, with the figures the bar shows (`train/loss`, `val/acc`, `energy/spent_J`, the forecast...),
and, in a long epoch, a line at every `line_every_pct` percent of its batches (at most one per
`min_line_interval_s` seconds), so a slow job still shows that it moves.

An epoch's line is written once the epoch is complete: at the next epoch's start, or at the fit's
end, after every epoch-end hook has logged its figures (the energy report logs the joules spent
after the bar's own epoch-end hook has run).

`conf/callbacks/default.yaml`: `progress_bar: {_target_: wattwise.utils.progress.progress_bar,
interactive: auto}`; `interactive: true` / `false` forces the bar / the lines.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar

from wattwise.utils.errors import ConfigError

KEY = "callbacks.progress_bar"


def is_interactive(stream: Any = None) -> bool:
    """Is `stream` (stdout by default) a terminal?"""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(
    refresh_rate: int = 1,
    interactive: bool | str = "auto",
    line_every_pct: float = 10.0,
    min_line_interval_s: float = 30.0,
    leave: bool = False,
) -> ProgressBar:
    """Lightning's tqdm bar when stdout is a terminal (or `interactive: true`), else `LineProgress`."""
    if interactive not in ("auto", True, False):
        raise ConfigError(f"{KEY}.interactive must be auto, true or false, got {interactive!r}")
    if interactive is True or (interactive == "auto" and is_interactive()):
        return TQDMProgressBar(refresh_rate=refresh_rate, leave=leave)
    return LineProgress(line_every_pct=line_every_pct, min_line_interval_s=min_line_interval_s)


def _fmt(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_s(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{s:02d}" if hours else f"{minutes}:{s:02d}"


class LineProgress(ProgressBar):
    """Progress as plain lines, for logs that are not a terminal (see the module doc).

    Args:
        line_every_pct: in an epoch that lasts longer than `min_line_interval_s`, a line at every
            this many percent of its batches (0: epoch lines only).
        min_line_interval_s: no two lines inside an epoch closer than this (the epoch's own line is
            always written).
        stream: where the lines go (None: sys.stdout at the time of writing).
    """

    def __init__(
        self, line_every_pct: float = 10.0, min_line_interval_s: float = 30.0, stream: IO[str] | None = None
    ) -> None:
        super().__init__()
        for name, v in (("line_every_pct", line_every_pct), ("min_line_interval_s", min_line_interval_s)):
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ConfigError(f"{KEY}.{name} must be a number >= 0, got {v!r}")
        self.line_every_pct = float(line_every_pct)
        self.min_line_interval_s = float(min_line_interval_s)
        self.stream = stream
        self._enabled = True
        self._pending: tuple[int, int, float] | None = None  # (epoch, batches, seconds) not yet written
        self._epoch_start = 0.0
        self._last_line = 0.0
        self._next_mark = math.inf  # the batch count of the next in-epoch line
        self._step = 1

    # ---- ProgressBar's interface ------------------------------------------------------------------
    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        print(*args, file=self.stream or sys.stdout, flush=True, **kwargs)

    def __getstate__(self) -> dict:
        return {k: (None if k == "stream" else v) for k, v in vars(self).items()}

    # ---- the lines ----------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(text + "\n")
        stream.flush()

    def _line(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int, done: int, s: float) -> str:
        total = self.total_train_batches
        last = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        head = f"Epoch {epoch + 1}" + (f"/{last}" if last else "")
        if isinstance(total, int) and total > 0:
            head += f"  {100 * done / total:3.0f}% {done}/{total} batches"
        else:
            head += f"  {done} batches"
        rate = f"{done / s:.1f} it/s" if s > 0 else "- it/s"
        figures = " ".join(f"{k}={_fmt(v)}" for k, v in self.get_metrics(trainer, pl_module).items())
        return f"{head}  [{_fmt_s(s)}, {rate}]" + (f"  {figures}" if figures else "")

    def _flush_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None and self.is_enabled:
            epoch, done, seconds = self._pending
            self._write(self._line(trainer, pl_module, epoch, done, seconds))
        self._pending = None

    # ---- hooks --------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_epoch(trainer, pl_module)
        self._epoch_start = self._last_line = time.perf_counter()
        total = self.total_train_batches
        if self.line_every_pct > 0 and isinstance(total, int) and total > 0:
            self._step = max(1, math.ceil(total * self.line_every_pct / 100))
            self._next_mark = self._step
        else:
            self._next_mark = math.inf

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        done = batch_idx + 1
        if done < self._next_mark:
            return
        self._next_mark = done + self._step
        now = time.perf_counter()
        total = self.total_train_batches
        if now - self._last_line < self.min_line_interval_s or done >= total or not self.is_enabled:
            return
        self._last_line = now
        self._write(self._line(trainer, pl_module, trainer.current_epoch, done, now - self._epoch_start))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        self._pending = (trainer.current_epoch, done, time.perf_counter() - self._epoch_start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_epoch(trainer, pl_module)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._flush_epoch(trainer, pl_module)
