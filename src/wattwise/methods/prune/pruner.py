"""Building the torch-pruning pruner at fit start, and finding the channel ratio a MACs target needs.

Kept apart from the callback so the set-up reads as decisions over a net and the settings, with
no trainer in sight. Everything that talks to torch-pruning goes through `tp_adapter`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wattwise.methods.prune import tp_adapter
from wattwise.methods.prune.schedule import schedule_ratios
from wattwise.methods.prune.settings import PruneSettings
from wattwise.methods.prune.surgery import keep_heads_equal, prune_group
from wattwise.methods.shared.structure import modes, restore_modes
from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "callbacks.prune"


class NotPrunable(Exception):
    """torch-pruning cannot act on this net (the callback steps aside)."""


def ignored_modules(net: nn.Module, names: Sequence[str], num_classes: int | None) -> list[nn.Module]:
    """The layers left alone: those named in `ignored_layers`, and the classifier head.

    The head is every layer whose output width is the number of classes: pruning it would
    change what the net predicts, not only how much it costs.
    """
    modules = dict(net.named_modules())
    ignored = []
    for name in names:
        if name not in modules:
            some = [n for n in modules if n][:20]
            raise ConfigError(f"{KEY}.ignored_layers: no layer named {name!r} in the net; some names: {some}")
        ignored.append(modules[name])
    if num_classes is not None:
        for m in net.modules():
            if (isinstance(m, nn.Linear) and m.out_features == num_classes) or (
                isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == num_classes
            ):
                ignored.append(m)
    return ignored


def build_pruner(
    net: nn.Module,
    example: torch.Tensor,
    settings: PruneSettings,
    ratio: float,
    steps: int,
    ignored: list[nn.Module],
) -> Any:
    """A pruner over `net`; raises NotPrunable where torch-pruning cannot trace it or finds nothing."""
    kind = settings.schedule
    saved = modes(net)
    try:
        pruner = tp_adapter.build_pruner(
            net,
            example,
            importance_kind=settings.importance,
            global_pruning=settings.global_pruning,
            ratio=ratio,
            max_layer_ratio=settings.max_layer_ratio,
            steps=steps,
            scheduler=lambda r, n: schedule_ratios(r, n, kind),
            ignored_layers=ignored,
            round_to=settings.round_to,
        )
        if not tp_adapter.has_groups(pruner):
            raise NotPrunable(
                f"torch-pruning found no prunable channel group in {type(net).__name__} "
                f"(all layers ignored by {KEY}.ignored_layers or as the head, or of types it "
                f"cannot prune, e.g. a GRU); nothing to prune"
            )
    except NotPrunable:
        raise
    except Exception as err:  # noqa: BLE001 - reported in one line, with the key to change
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise NotPrunable(
            f"torch-pruning could not trace {type(net).__name__} ({type(err).__name__}: {first}); "
            f"leave the offending layers out with {KEY}.ignored_layers"
        ) from err
    finally:
        restore_modes(saved)  # building a pruner leaves the net in eval mode
    return pruner


def one_shot(
    net: nn.Module, example: torch.Tensor, settings: PruneSettings, ratio: float, ignored: list[nn.Module]
) -> None:
    """Prune `net` to `ratio` in a single step (on a copy, to measure what a ratio gives)."""
    pruner = build_pruner(net, example, settings, ratio, 1, ignored)
    for group in tp_adapter.step_groups(pruner):
        idxs = keep_heads_equal(pruner, group, tp_adapter.group_root_idxs(group))
        if idxs:
            prune_group(tp_adapter.regroup(pruner, group, idxs), net, [])


def ratio_for_macs(
    net: nn.Module,
    example: torch.Tensor,
    settings: PruneSettings,
    base_macs: int,
    num_classes: int | None,
) -> float:
    """Bisect the channel ratio whose one-shot prune of a copy reaches base/macs_reduction MACs."""
    assert settings.macs_reduction is not None
    target = base_macs / settings.macs_reduction

    def macs_at(ratio: float) -> int:
        trial = copy.deepcopy(net)
        one_shot(
            trial, example, settings, ratio, ignored_modules(trial, settings.ignored_layers, num_classes)
        )
        return tp_adapter.count_macs_params(trial, example[:1])[0]

    lo, hi = 0.0, settings.max_layer_ratio
    for _ in range(10):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs_at(mid) > target else (lo, mid)
    macs = macs_at(hi)
    if macs > target * 1.02:
        log.warning(
            "prune: %s=%.2f is out of reach (best %.2fx at ratio %.2f, max_layer_ratio=%.2f)",
            f"{KEY}.macs_reduction",
            settings.macs_reduction,
            base_macs / max(macs, 1),
            hi,
            settings.max_layer_ratio,
        )
    return hi
