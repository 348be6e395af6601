"""Pruning one channel group of a net that is training, and keeping the optimizer in step.

torch-pruning replaces every tensor it shrinks with a new `nn.Parameter`. The optimizer would
go on updating the old tensors (the new ones would never train), so each changed parameter is
swapped into the same optimizer object (the LR scheduler and precision plugin keep pointing at
it) and its state (momentum, Adam moments) is cut with exactly the index selections
torch-pruning applied to the weight. The new tensors come back trainable: frozen ones are
frozen again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from wattwise.methods.prune import tp_adapter
from wattwise.methods.shared.structure import sync_attributes

log = logging.getLogger(__name__)


def _owned_parameters(net: nn.Module) -> list[tuple[nn.Module, str, nn.Parameter]]:
    return [(mod, pname, p) for mod in net.modules() for pname, p in mod._parameters.items() if p is not None]


def heads_multiple(group: Any) -> int:
    """The multiple a group's width must keep: every attention in it keeps equal-width heads."""
    heads = [m.num_heads for m, _ in tp_adapter.group_targets(group) if isinstance(m, nn.MultiheadAttention)]
    return math.lcm(*heads) if heads else 1


def keep_heads_equal(pruner: Any, group: Any, idxs: Sequence[int]) -> list[int]:
    """Prune fewer of `idxs` (the most important ones stay) so that attention heads stay equal."""
    multiple = heads_multiple(group)
    if multiple == 1:
        return list(idxs)
    width = next(
        (m.embed_dim for m, _ in tp_adapter.group_targets(group) if isinstance(m, nn.MultiheadAttention)),
        None,
    )
    if width is None:
        return list(idxs)
    extra = -(width - len(idxs)) % multiple  # channels kept back so the kept width is a multiple
    if extra == 0:
        return list(idxs)
    imp = tp_adapter.root_importance(pruner, group)
    ranked = list(idxs)
    if imp is not None and len(imp) > max(ranked, default=-1):
        ranked.sort(key=lambda i: float(imp[i]))  # least important first
    return sorted(ranked[: len(ranked) - extra])


def _sliced_state(
    state: dict[str, Any], old: torch.Tensor, new: torch.Tensor, ops: list[tuple[int, torch.Tensor]] | None
) -> dict[str, Any]:
    """The optimizer state of `old`, cut like `old` was cut into `new`; {} (fresh) if it cannot be."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if torch.is_tensor(value) and value.dim() > 0:
            if ops is None or value.shape != old.shape:
                log.debug(
                    "prune: optimizer state %r of shape %s cannot be sliced; restarts", key, value.shape
                )
                return {}
            for dim, keep in ops:
                value = value.index_select(dim, keep.to(value.device))
            if value.shape != new.shape:
                return {}
        out[key] = value
    return out


def swap_into_optimizers(
    old: nn.Parameter,
    new: nn.Parameter,
    optimizers: Iterable[torch.optim.Optimizer],
    ops: list[tuple[int, torch.Tensor]] | None,
) -> None:
    """Put `new` where `old` was in every optimizer, with `old`'s state sliced alike."""
    for opt in optimizers:
        for pg in opt.param_groups:
            pg["params"] = [new if q is old else q for q in pg["params"]]
        state = opt.state.pop(old, None)
        if state is not None:
            opt.state[new] = _sliced_state(state, old, new, ops)


def prune_group(group: Any, net: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> list[str]:
    """Prune one group of `net`; returns the names of the modules whose tensors changed."""
    before = _owned_parameters(net)
    with tp_adapter.recording_selections() as record:
        tp_adapter.prune(group)
    names = {m: n for n, m in net.named_modules()}
    changed: dict[nn.Module, None] = {}
    for mod, pname, old in before:
        new = mod._parameters.get(pname)
        if new is None or new is old:
            continue
        new.requires_grad_(old.requires_grad)
        swap_into_optimizers(old, new, optimizers, record.chain(new, old))
        changed[mod] = None
    for mod in changed:
        sync_attributes(mod)
    for mod in net.modules():  # an attention's out_proj shrinks with it; torch-pruning sets kdim/vdim itself
        if isinstance(mod, nn.MultiheadAttention):
            sync_attributes(mod)
    return [names.get(m, "?") for m in changed]
