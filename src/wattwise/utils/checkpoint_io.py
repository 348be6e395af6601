"""Checkpoints that are whole or absent: the Trainer's CheckpointIO plugin (conf/trainer/default.yaml).

Lightning's own `TorchCheckpointIO` writes through fsspec; on a full disk that ends in a long
traceback. This plugin writes local checkpoints with `atomic_write` (a temporary file in the same
folder, then a rename), so a failed write never replaces `last.ckpt` or the best checkpoint with a
truncated file, and says in one line (`OutputError`) which file could not be written and why.
Remote paths (`s3://...`) keep Lightning's own writer.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

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
