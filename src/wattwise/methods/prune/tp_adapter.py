"""The one place that talks to torch-pruning, private APIs included.

Checked with torch-pruning 1.6.1 (its own `__version__` still says 1.6.0; pyproject.toml asks
for >= 1.5). Everything else in the prune folder goes through these functions. Its private names
(`to_plain_idxs`, `BasePruningFunc._prune_parameter_and_grad`, recorded to slice optimizer state
alike, and the pruner's `_scope_initial_channels`) are reached through wattwise.compat.torch_pruning;
the pruner's public `layer_init_out_ch`, `layer_init_in_ch`, `initial_total_channels` and
`current_step` hold the original widths a resumed schedule needs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from wattwise.compat import torch_pruning as compat_tp

TESTED_VERSIONS = ("1.6.1",)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("torch-pruning")
    except PackageNotFoundError:
        return "unknown"


# ---- importance and pruner -------------------------------------------------------------------------
def importance(kind: str) -> Any:
    import torch_pruning as tp

    if kind == "taylor":
        return tp.importance.TaylorImportance()
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.MagnitudeImportance(p=2)


def build_pruner(
    net: nn.Module,
    example: Any,
    *,
    importance_kind: str,
    global_pruning: bool,
    ratio: float,
    max_layer_ratio: float,
    steps: int,
    scheduler: Callable[[float, int], list[float]],
    ignored_layers: Sequence[nn.Module],
    round_to: int | None,
) -> Any:
    """A `BasePruner` over `net`, traced with `example` (a batch of real inputs).

    Raw `nn.Parameter`s of the net (a positional embedding) are pruned along their last
    non-singleton dimension, torch-pruning's default; its warning about them is silenced.
    `num_heads` is not passed: for `nn.MultiheadAttention` it makes torch-pruning leave the
    attention's width alone; the callback keeps each head's width equal instead (`mha_multiple`).
    """
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        return tp.pruner.BasePruner(
            net,
            example,
            importance=importance(importance_kind),
            global_pruning=global_pruning,
            pruning_ratio=ratio,
            max_pruning_ratio=max_layer_ratio,
            iterative_steps=steps,
            iterative_pruning_ratio_scheduler=scheduler,
            ignored_layers=list(ignored_layers),
            round_to=round_to,
        )


def has_groups(pruner: Any) -> bool:
    return any(True for _ in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers))


def set_importance(pruner: Any, kind: str) -> None:
    pruner.importance = importance(kind)


def step_groups(pruner: Any) -> list[Any]:
    """The groups the next scheduled step would prune (the step counter advances)."""
    return list(pruner.step(interactive=True))


def current_step(pruner: Any) -> int:
    return int(pruner.current_step)


# ---- groups ----------------------------------------------------------------------------------------
def group_root(group: Any) -> tuple[Any, Any]:
    """(module, handler) of the group's root: what `regroup` needs to rebuild it."""
    dep = group[0].dep
    return dep.target.module, dep.handler


def group_root_idxs(group: Any) -> list[int]:
    return sorted(int(i) for i in group[0].idxs)


def regroup(pruner: Any, group: Any, idxs: Sequence[int]) -> Any:
    """The same group, pruning `idxs` of its root."""
    module, handler = group_root(group)
    return pruner.DG.get_pruning_group(module, handler, list(idxs))


def group_targets(group: Any) -> list[tuple[Any, list[int]]]:
    """(target module or parameter, plain indices) of every dependency in the group."""
    return [(dep.target.module, compat_tp.to_plain_idxs(idxs)) for dep, idxs in group]


def root_importance(pruner: Any, group: Any) -> torch.Tensor | None:
    """Importance of every channel of the group's root (None where torch-pruning gives none)."""
    module, handler = group_root(group)
    dg = pruner.DG
    width = (
        dg.get_out_channels(module) if dg.is_out_channel_pruning_fn(handler) else dg.get_in_channels(module)
    )
    if width is None:
        return None
    with torch.no_grad():
        imp = pruner.estimate_importance(dg.get_pruning_group(module, handler, list(range(width))))
    return None if imp is None else imp.detach().float().cpu()


def prune(group: Any) -> None:
    group.prune()


# ---- recording the index selections of a prune ----------------------------------------------------
@dataclass
class SelectLog:
    """Every `index_select` torch-pruning applied to a tensor, by the tensor it produced."""

    entries: dict[int, tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]] = field(default_factory=dict)

    def chain(self, new: torch.Tensor, old: torch.Tensor) -> list[tuple[int, torch.Tensor]] | None:
        """The (dim, kept indices) selections that made `new` from `old`, in order; None if unknown."""
        ops: list[tuple[int, torch.Tensor]] = []
        t = new
        while t is not old:
            entry = self.entries.get(id(t))
            if entry is None or entry[0] is not t:
                return None
            _, src, dim, keep = entry
            ops.append((dim, keep))
            t = src
        return ops[::-1]


@contextlib.contextmanager
def recording_selections() -> Iterator[SelectLog]:
    """Record which rows torch-pruning keeps of each tensor it shrinks, while the block runs."""
    record = SelectLog()

    def wrap(original: Any) -> Any:
        def recorded(self: Any, weight: torch.Tensor, keep_idxs: Any, pruning_dim: int) -> torch.Tensor:
            out = original(self, weight, keep_idxs, pruning_dim)
            keep = torch.as_tensor(keep_idxs, dtype=torch.long).flatten().cpu()
            dim = pruning_dim if pruning_dim >= 0 else weight.dim() + pruning_dim
            record.entries[id(out)] = (out, weight, dim, keep)  # holding both keeps the ids unique
            return out

        return recorded

    with compat_tp.wrapped_prune_parameter(wrap):
        yield record


# ---- the original widths, for a resumed schedule --------------------------------------------------
def capture_state(pruner: Any, net: nn.Module) -> dict[str, Any]:
    names = {m: n for n, m in net.named_modules()}
    return {
        "init_channels": {
            names[m]: (int(pruner.layer_init_out_ch[m]), int(pruner.layer_init_in_ch[m]))
            for m in pruner.layer_init_out_ch
            if m in names
            and pruner.layer_init_out_ch[m] is not None
            and pruner.layer_init_in_ch[m] is not None
        },
        "scope_init": {str(k): int(v) for k, v in compat_tp.scope_initial_channels(pruner).items()},
        "init_total": int(pruner.initial_total_channels),
    }


def apply_state(pruner: Any, net: nn.Module, state: dict[str, Any], steps_done: int) -> None:
    """A pruner built on an already pruned net: give it the original widths and the steps done."""
    modules = dict(net.named_modules())
    for name, (out_ch, in_ch) in (state.get("init_channels") or {}).items():
        m = modules.get(name)
        if m is not None and m in pruner.layer_init_out_ch:
            pruner.layer_init_out_ch[m], pruner.layer_init_in_ch[m] = out_ch, in_ch
    compat_tp.set_scope_initial_channels(pruner, dict(state.get("scope_init") or {}))
    pruner.initial_total_channels = state.get("init_total")
    pruner.current_step = steps_done


# ---- counting ---------------------------------------------------------------------------------------
@torch.no_grad()
def count_macs_params(net: nn.Module, example: Any) -> tuple[int, int]:
    """MACs per sample and parameters (torch-pruning counts on a deep copy, in eval mode)."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(net, example)
    return int(macs), int(params)
