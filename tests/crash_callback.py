"""A test-only callback that makes a run fail mid-fit, to check that sweeps report failed jobs.

Used from the command line of a sweep, e.g.
    -m +callbacks.crash._target_=crash_callback.CrashMidFit +callbacks.crash.crash=true,false
(tests/ must be on PYTHONPATH). Not an energy method; never used outside tests.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class CrashMidFit(Callback):
    """Raises RuntimeError after `after_batches` training batches when `crash` is true."""

    def __init__(self, crash: bool = True, after_batches: int = 1) -> None:
        self.crash = crash
        self.after_batches = after_batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.crash and trainer.global_step >= self.after_batches:
            raise RuntimeError(f"crash_callback: deliberate crash after {trainer.global_step} batches")


class BuggyInit(Callback):
    """A user's callback with a bug in its constructor (an AttributeError, not a config mistake)."""

    def __init__(self) -> None:
        self.value = self.no_such_attribute
