"""The run's one monitored metric and its mode: chosen before training from what the module logs.

Checkpointing, early stopping, the energy report's plot, the Optuna objective, `compare` and the
final table all read the run-wide `monitor` / `mode` (conf/train.yaml). With `monitor: auto`
the choice is made from the metrics the module logs in one validation batch, run before the fit
(Lightning's own sanity check, in a throwaway Trainer): `val/acc` (max) where it is logged,
else `val/loss` (min). An explicit monitor that is never logged fails in one line, before the
first training step; `mode: auto` follows the metric's name (`acc`, `f1`, `r2`... max; `loss`,
`mae`, `mse`... min).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from typing import Any

from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
MODES = ("min", "max")
_MAX_WORDS = ("acc", "f1", "auroc", "auc", "precision", "recall", "r2", "iou", "dice", "bleu", "map", "score")
_MIN_WORDS = ("loss", "mae", "mse", "rmse", "error", "err", "nll", "perplexity", "wer", "cer", "mape")


def mode_for(name: str) -> str | None:
    """`max` or `min` from the metric's last path part (`val/acc` -> max, `val/mae` -> min), or None."""
    words = name.rsplit("/", 1)[-1].lower().replace("-", "_").split("_")
    if any(w in _MIN_WORDS for w in words):
        return "min"
    if any(w in _MAX_WORDS for w in words):
        return "max"
    return None


def choose(logged: Iterable[str], monitor: str = AUTO, mode: str = AUTO) -> tuple[str, str, str]:
    """(monitor, mode, why) from the metrics the module logs in validation; ConfigError otherwise."""
    logged = sorted(set(logged))
    shown = ", ".join(logged) or "nothing"
    if monitor == AUTO:
        if "val/acc" in logged:
            monitor, why = "val/acc", "val/acc is logged"
        elif "val/loss" in logged:
            monitor, why = "val/loss", "val/acc is not logged, val/loss is"
        else:
            raise ConfigError(
                f"monitor=auto: the module's validation logs neither val/acc nor val/loss (it logs {shown}); "
                "set monitor=<a metric it logs> and mode=min|max"
            )
    else:
        if monitor not in logged:
            raise ConfigError(
                f"monitor={monitor} is never logged by the module's validation (it logs {shown}): "
                "set monitor= to one of those, or monitor=auto"
            )
        why = "set by monitor="
    if mode == AUTO:
        guessed = mode_for(monitor)
        if guessed is None:
            raise ConfigError(
                f"mode=auto cannot tell whether {monitor} should rise or fall: set mode=min or mode=max"
            )
        mode = guessed
    elif mode not in MODES:
        raise ConfigError(f"mode must be min, max or auto, got {mode!r}")
    return monitor, mode, why


def logged_in_validation(module: Any, datamodule: Any, accelerator: str = "auto") -> set[str]:
    """The metric names one validation batch logs (a throwaway Trainer; the RNG state is kept)."""
    import lightning as L
    import numpy as np
    import torch

    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in quiet]
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        for lg in quiet:
            lg.setLevel(logging.WARNING)
        with torch.random.fork_rng(devices=[]):
            probe = L.Trainer(
                accelerator=accelerator, devices=1, limit_val_batches=1, num_sanity_val_steps=0,
                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[],
            )  # fmt: skip
            probe.validate(module, datamodule=datamodule, verbose=False)
            return set(probe.callback_metrics)
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
        random.setstate(py_state)
        np.random.set_state(np_state)


def resolve(cfg: Mapping[str, Any], module: Any, datamodule: Any) -> tuple[str, str, str]:
    """The run's (monitor, mode, why), probing the module's validation (see module doc)."""
    monitor, mode = str(cfg.get("monitor") or AUTO), str(cfg.get("mode") or AUTO)
    if mode not in (*MODES, AUTO):
        raise ConfigError(f"mode must be min, max or auto, got {mode!r}")
    accelerator = str((cfg.get("trainer") or {}).get("accelerator") or "auto")
    logged = logged_in_validation(module, datamodule, accelerator)
    return choose(logged, monitor, mode)
