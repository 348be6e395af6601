"""One scheduled prune: rank 0 chooses the channels, every rank cuts exactly those.

Also the Taylor importance's gradients: Lightning zeroes gradients before the epoch hooks run, so
the callback sums them during the epoch before a prune and this module puts them back for it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from wattwise.methods.prune import tp_adapter
from wattwise.methods.prune.surgery import keep_heads_equal, prune_group
from wattwise.methods.shared.structure import modes, restore_modes

log = logging.getLogger(__name__)

KEY = "callbacks.prune"

Gradients = dict[nn.Parameter, torch.Tensor]


class RanksDisagree(RuntimeError):
    """The ranks' pruning groups differ: a bug to report, not a net to step aside on."""


def add_gradients(net: nn.Module, summed: Gradients) -> None:
    """Add each parameter's current gradient (as fp32, after unscaling and the DDP all-reduce)."""
    for p in net.parameters():
        if p.grad is not None:
            acc = summed.get(p)
            g = p.grad.detach().float()
            summed[p] = g.clone() if acc is None else acc.add_(g)


@contextlib.contextmanager
def taylor_gradients(net: nn.Module, pruner: Any, importance: str, summed: Gradients) -> Iterator[None]:
    """The summed gradients as `.grad` while the pruner ranks channels; cleared afterwards.

    With none gathered (e.g. resumed right before a prune) the step falls back to magnitude.
    """
    if importance != "taylor":
        yield
        return
    gathered = bool(summed)
    if not gathered:
        log.warning("prune: no gradients gathered for Taylor importance; using magnitude this step")
        tp_adapter.set_importance(pruner, "magnitude")
    for p, g in summed.items():
        p.grad = g.to(p.dtype)
    try:
        yield
    finally:
        for p in net.parameters():
            p.grad = None
        summed.clear()
        if not gathered:
            tp_adapter.set_importance(pruner, importance)


def prune_step(net: nn.Module, pruner: Any, strategy: Any, optimizers: list[Any]) -> int:
    """Apply the pruner's next step with rank 0's channel choice; the pruner's step count after it.

    Every rank ranks its own channels (the same when the weights are in sync) but applies the
    indices broadcast from rank 0, so the ranks' nets stay identical by construction.
    """
    saved = modes(net)
    with torch.no_grad():
        groups = tp_adapter.step_groups(pruner)
        names = {m: n for n, m in net.named_modules()}
        plan = []
        for group in groups:
            root, _ = tp_adapter.group_root(group)
            idxs = keep_heads_equal(pruner, group, tp_adapter.group_root_idxs(group))
            plan.append((names.get(root, repr(root)), idxs))
        plan0 = strategy.broadcast(plan, src=0)
        if [n for n, _ in plan0] != [n for n, _ in plan]:
            raise RanksDisagree(f"{KEY}: ranks disagree on the pruning groups: {plan0} vs {plan}")
        for group, (_, idxs) in zip(groups, plan0):
            if idxs:
                prune_group(tp_adapter.regroup(pruner, group, idxs), net, optimizers)
    restore_modes(saved)  # a prune leaves the net in eval mode
    return tp_adapter.current_step(pruner)
