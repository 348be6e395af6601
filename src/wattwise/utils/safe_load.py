"""Loading a checkpoint a user names without running its pickle: `weights_only=True`, one place.

A `.ckpt` is a pickle, and a pickle can call any function while it loads (a crafted file can run a
shell command). Every file a user names (`ckpt_path`, `resume=`, hpc checkpoints, a distillation
teacher and its weights, the logit cache, the best checkpoint pruning and qat export) is read here
with `torch.load(..., weights_only=True)`, which only rebuilds tensors and plain containers.
wattwise's own checkpoints need nothing more: every record it adds (the run identity, the pruned
shapes, each method's state) is plain data, so no allow-list of wattwise classes is needed.

A file that needs more is refused in one line naming it and the opt-in `trust_checkpoint=true`
(a run-wide key in conf/train.yaml, never the default, logged with a warning when used), for old
checkpoints from a source the user trusts. `train()` sets it with `set_trust`; a script that uses
the callbacks directly gets the safe default.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)

TRUST_KEY = "trust_checkpoint"
_REFUSED = "Weights only load failed"  # how torch words a weights_only refusal
_trust = {"on": False}


def set_trust(trust: bool) -> None:
    """The run's `trust_checkpoint`: True lets the loaders unpickle anything (warned once here)."""
    if trust and not _trust["on"]:
        log.warning(
            "%s=true: checkpoints are loaded with weights_only=False, so a crafted file can run code. "
            "Use it only for files from a source you trust.",
            TRUST_KEY,
        )
    _trust["on"] = bool(trust)


def trusted() -> bool:
    """Whether this run opted in to full unpickling (`trust_checkpoint=true`)."""
    return _trust["on"]


def is_refusal(err: BaseException) -> bool:
    """Whether `err` is torch refusing an object a weights_only load may not build (a GLOBAL: the
    pickle's only way to call code), not a truncated, garbled or unreadable file."""
    return isinstance(err, pickle.UnpicklingError) and _REFUSED in str(err) and "GLOBAL" in str(err)


def refusal_message(key: str, path: str | Path, err: BaseException | None = None) -> str:
    """One line: the file, what it holds that weights_only refuses, and the opt-in."""
    reason = ""
    if err is not None:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        reason = f" (it would call {found.group(1)})" if found else ""
    return (
        f"{key}={path} holds objects other than tensors and plain data{reason}, which a checkpoint "
        f"could use to run code when loaded; refused. If the file comes from a source you trust, "
        f"load it anyway with {TRUST_KEY}=true"
    )


def load_checkpoint(path: str | Path, key: str, mmap: bool = False) -> Any:
    """`torch.load(path)` on the CPU, weights only unless the run trusts checkpoints.

    A refusal is a ConfigError naming `key`, the file and `trust_checkpoint=true`; any other failure
    (truncated, not a checkpoint, unreadable) is raised as torch raised it, for the caller to word.
    """
    trust = trusted()
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=not trust, mmap=mmap)
    except pickle.UnpicklingError as err:
        if not trust and is_refusal(err):
            raise ConfigError(refusal_message(key, path, err)) from None
        raise


def weights_only_for_lightning() -> bool:
    """What `trainer.fit/test(weights_only=...)` gets: True unless the run trusts checkpoints."""
    return not trusted()
