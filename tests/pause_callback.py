"""A test-only callback that holds a run at a chosen batch until a signal arrives.

Tests of preemption send real signals to a `train.py` subprocess; with the tiny test settings an
epoch lasts milliseconds, so the run waits here, mid-epoch, for the test to send them:
    +callbacks.pause._target_=pause_callback.PauseForSignal +callbacks.pause.marker=<file>
It writes `marker` when it starts waiting, then waits (at most `timeout_s`) until Lightning has
seen a SIGTERM; other signals (SLURM's SIGUSR1) are handled meanwhile and the wait goes on.
Never used outside tests.
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PauseForSignal(Callback):
    def __init__(self, marker: str, epoch: int = 1, batch: int = 1, timeout_s: float = 60.0) -> None:
        self.marker = Path(marker)
        self.epoch = epoch
        self.batch = batch
        self.timeout_s = timeout_s
        self.waited = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.waited or trainer.current_epoch != self.epoch or batch_idx != self.batch:
            return
        self.waited = True
        self.marker.write_text(
            f"epoch={trainer.current_epoch} batch={batch_idx} step={trainer.global_step}\n"
        )
        deadline = time.monotonic() + self.timeout_s
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.02)
