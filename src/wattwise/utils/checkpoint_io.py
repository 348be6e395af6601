"""Checkpoints that are whole or absent: the Trainer's CheckpointIO plugin (conf/trainer/default.yaml).

Lightning's own `TorchCheckpointIO` writes through fsspec; on a full disk that ends in a long
traceback. This plugin writes local checkpoints with `atomic_write` (a temporary file in the same
folder, then a rename), so a failed write never replaces `last.ckpt` or the best checkpoint with a
truncated file, and says in one line (`OutputError`) which file could not be written and why.
Remote paths (`s3://...`) keep Lightning's own writer.

`LeanModelCheckpoint` is Lightning's `ModelCheckpoint` without its per-step cost where it saves at
epoch ends only (the run's best and last checkpoints: conf/callbacks/default.yaml, utils/preemption.py).
It records which hook wrote its file at which step, so that `last.ckpt`, written in the same hook at
the same step as a new best checkpoint, is a second name of that file instead of a second
serialisation of the same state (`LastCheckpoint`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy

from wattwise.compat import lightning as compat_lightning
from wattwise.utils.atomic_write import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local writes are atomic and whose failures name the file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()  # serialised in memory first, as Lightning does: a write error keeps its errno
        torch.save(checkpoint, buffer)
        atomic_write(Path(path), buffer.getbuffer(), "checkpoint")


class LeanModelCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint` (the same saves, the same `state_key` in checkpoints), less its
    per-step work where it saves only at epoch ends.

    Lightning calls every callback's hooks on every step. `ModelCheckpoint` then checks, every step,
    whether it should save now (it saves per step only with `every_n_train_steps` or
    `train_time_interval`), and the trainer names the call by `state_key`, a string built from five
    settings each time. Here a checkpoint that saves only at epoch ends returns at once from the
    per-step hook, and `state_key` is built again only when one of its settings changed.
    """

    _state_key_cache: tuple[tuple[Any, ...], str] | None = None
    _hook: str | None = None  # the epoch-end hook running now, if any
    written: tuple[int, str, str] | None = None  # (global step, hook, path) written in the hook now running

    @property
    def state_key(self) -> str:
        settings = (
            self.monitor,
            self.mode,
            self._every_n_train_steps,
            self._every_n_epochs,
            self._train_time_interval,
        )
        cached = self._state_key_cache
        if cached is None or cached[0] != settings:
            key = super().state_key
            if type(self) is LeanModelCheckpoint:  # Lightning's own key: checkpoints resume either way
                key = ModelCheckpoint.__qualname__ + key[len(LeanModelCheckpoint.__qualname__) :]
            cached = self._state_key_cache = (settings, key)
        return cached[1]

    @contextlib.contextmanager
    def _in(self, hook: str) -> Iterator[None]:
        """While `hook` runs: what is written is recorded as written in it (and only that)."""
        self._hook, self.written = hook, None
        try:
            yield
        finally:
            self._hook = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self._every_n_train_steps < 1 and self._train_time_interval is None:
            return  # Lightning's hook would return without saving too, after its checks
        with self._in("on_train_batch_end"):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        with self._in("on_train_epoch_end"):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        with self._in("on_validation_end"):
            super().on_validation_end(trainer, pl_module)

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:  # Lightning's write (compat)
        self.written = None
        self.write(trainer, filepath)
        if self._hook is not None:
            self.written = (trainer.global_step, self._hook, filepath)

    def write(self, trainer: Any, filepath: str) -> None:
        """Serialise the trainer's state to `filepath` (Lightning's own write)."""
        compat_lightning.write_checkpoint(self, trainer, filepath)

    def twin_written_now(self, trainer: Any) -> str | None:
        """The local file another of the trainer's checkpoint callbacks wrote in this same hook at this
        step with the same contents setting (it holds the state this one would write), else None."""
        if self._hook is None or not _one_file_per_checkpoint(trainer.strategy):
            return None
        for other in trainer.checkpoint_callbacks:
            if other is self or not isinstance(other, LeanModelCheckpoint) or other.written is None:
                continue
            step, hook, path = other.written
            same = step == trainer.global_step and hook == self._hook
            if same and other.save_weights_only == self.save_weights_only and "://" not in path:
                return path
        return None


def _one_file_per_checkpoint(strategy: Any) -> bool:
    """Is every checkpoint one whole file written by the atomic writer (so a second name of it is the
    same checkpoint)? Not with sharded strategies (FSDP, DeepSpeed: a folder, gathered collectively)
    or another writer (one that rewrites a file in place would change both names' contents)."""
    whole = isinstance(strategy, SingleDeviceStrategy | DDPStrategy) and not isinstance(
        strategy, DeepSpeedStrategy
    )
    return whole and isinstance(strategy.checkpoint_io, AtomicCheckpointIO)
