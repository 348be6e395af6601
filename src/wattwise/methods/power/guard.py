"""Putting the card back as it was found: the original limit (not merely the maximum) and persistence mode.

The restore runs once, on the first of: fit end, an exception or Ctrl-C inside training,
SIGTERM (SLURM's `scancel`; the handler found before is chained) and interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from wattwise.methods.shared.zeus_adapter import Gpu, ZeusdGpu

log = logging.getLogger("wattwise.methods.power.callback")  # one logger for the whole method


class LimitGuard:
    """Remembers what the card had and puts it back; `on_signal` runs first when SIGTERM arrives."""

    def __init__(self, on_signal: Callable[[], None] | None = None) -> None:
        self._on_signal = on_signal
        self._sigterm_handler = self._on_sigterm  # one bound method, so it can be compared and removed
        self._atexit_hook = self._on_exit
        self._installed = False
        self._prev_sigterm: Any = None
        self.reset()

    def reset(self) -> None:
        self.gpu: Gpu | ZeusdGpu | None = None
        self.original_mW: int | None = None
        self.original_persistence: bool | None = None
        self.touched = False  # Zeus was asked to change something on the card
        self.stopped = False  # after a restore: change nothing any more
        self.restored: bool | None = None  # None: nothing was changed, so nothing to restore

    @property
    def original_W(self) -> int | None:
        return None if self.original_mW is None else self.original_mW // 1000

    def remember(self, gpu: Gpu | ZeusdGpu, original_mW: int) -> None:
        self.gpu, self.original_mW = gpu, original_mW

    def remember_persistence(self) -> None:
        """Read persistence mode before Zeus turns it on; a GPU that does not report it is left alone."""
        if self.original_persistence is not None or self.gpu is None:
            return
        try:
            self.original_persistence = self.gpu.persistence()
        except Exception:  # noqa: BLE001 - not every GPU reports it
            self.original_persistence = None

    def restore(self, why: str) -> None:
        """Put the original limit and persistence mode back; once."""
        self.stopped = True
        if not self.touched or self.restored is not None or self.gpu is None or self.original_mW is None:
            return
        self.restored = False
        gpu = self.gpu
        try:
            if gpu.limit_mW() != self.original_mW:
                gpu.set_limit_mW(self.original_mW)
                log.info("Power limit restored to %d W (%s).", self.original_W, why)
            if self.original_persistence is not None and gpu.persistence() != self.original_persistence:
                gpu.set_persistence(self.original_persistence)
            self.restored = True
        except Exception as err:  # noqa: BLE001 - nothing more can be done; say so loudly
            log.warning(
                "Could not restore GPU %s's power limit to %d W (%s): %s",
                gpu.index,
                self.original_W,
                why,
                err,
            )

    # ---- SIGTERM and exit ---------------------------------------------------------------------
    def install(self) -> None:
        """Restore on SIGTERM (chaining the handler found) and at interpreter exit."""
        if self._installed:
            return
        self._installed = True
        atexit.register(self._atexit_hook)
        if threading.current_thread() is not threading.main_thread():
            return
        prev = signal.getsignal(signal.SIGTERM)
        if prev is None:  # installed outside Python: it cannot be chained, so leave it alone
            return
        self._prev_sigterm = prev
        signal.signal(signal.SIGTERM, self._sigterm_handler)

    def remove(self) -> None:
        if not self._installed:
            return
        self._installed = False
        atexit.unregister(self._atexit_hook)
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._sigterm_handler:
                signal.signal(signal.SIGTERM, self._prev_sigterm)
        self._prev_sigterm = None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.stopped = True
        if self._on_signal is not None:
            self._on_signal()
        self.restore("SIGTERM")
        prev = self._prev_sigterm
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL:  # what would have happened without us: terminate
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _on_exit(self) -> None:
        self.restore("exit")
