"""torch's private names wattwise uses (checked against torch 2.13.0).

- `torch.utils._pytree`: flattening any batch structure (the data cache);
- `torch.ops.mkldnn._is_mkldnn_bf16_supported`: oneDNN's own answer to "does this CPU do bf16";
- a scheduler's `_last_lr`: kept in step when the batch-size finder rescales the learning rate;
- `GradScaler._scale` / `_init_scale`: the loss scale, read to count fp16 overflow steps;
- `torch._dynamo.reset`: compiled graphs of a net whose shapes changed are dropped.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

CHECKED_WITH = "torch==2.13.0"
PRIVATE_NAMES = (
    "torch.utils._pytree.TreeSpec",
    "torch.utils._pytree.tree_flatten",
    "torch.utils._pytree.tree_unflatten",
    "torch.amp.GradScaler._scale",  # instance attributes: see tests/test_compat.py
    "torch.amp.GradScaler._init_scale",
    "torch.optim.lr_scheduler.LRScheduler._last_lr",
)
INSTANCE_ATTRIBUTES = {"_scale", "_init_scale", "_last_lr"}

__all__ = ["TreeSpec", "tree_flatten", "tree_unflatten"]


def onednn_bf16_supported() -> bool:
    """oneDNN's own answer; raises AttributeError/RuntimeError where this build has no such op."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def sync_last_lr(scheduler: Any, lrs: list[float]) -> None:
    """Keep a scheduler's reported LR (`get_last_lr()`) in step with LRs set by hand."""
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = list(lrs)


def grad_scale(scaler: Any) -> Any:
    """The scaler's current loss scale tensor (None before its first step)."""
    return getattr(scaler, "_scale", None) if scaler is not None else None


def initial_grad_scale(scaler: Any) -> float | None:
    value = getattr(scaler, "_init_scale", None)
    return float(value) if value is not None else None


def reset_compiled_graphs() -> None:
    """Drop torch.compile's graphs (only if dynamo was ever imported: importing it is slow)."""
    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()
