"""Scaling the learning rate with the batch size: a heuristic that keeps the noise scale about the same.

- `linear` (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): lr x (new / old), for SGD;
- `sqrt` (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms"):
  lr x sqrt(new / old), for Adam-family and other adaptive optimizers;
- `none`: the learning rate is left as configured;
- `auto`: `linear` for SGD (and its subclasses), `sqrt` for every other optimizer.

Neither rule is exact: a recipe tuned at its batch size may still need its learning rate (and
warm-up) re-tuned at another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from wattwise.compat.torch import sync_last_lr

LR_RULES = ("auto", "linear", "sqrt", "none")


def rule_for(setting: str, optimizer: torch.optim.Optimizer) -> str:
    """The rule `setting` means for `optimizer` (`auto`: linear for SGD, sqrt otherwise)."""
    if setting != "auto":
        return setting
    return "linear" if isinstance(optimizer, torch.optim.SGD) else "sqrt"


def factor(rule: str, new_batch_size: int, old_batch_size: int) -> float:
    ratio = new_batch_size / old_batch_size
    if rule == "linear":
        return ratio
    if rule == "sqrt":
        return math.sqrt(ratio)
    if rule == "none":
        return 1.0
    raise ValueError(f"unknown learning-rate rule {rule!r}")


@dataclass(frozen=True)
class Scaling:
    """What was done: the rule per optimizer, and the first param group's lr before and after."""

    rules: tuple[str, ...]
    lr_before: float | None
    lr_after: float | None

    @property
    def rule(self) -> str:
        """One name when every optimizer got the same rule, else the list."""
        return self.rules[0] if len(set(self.rules)) == 1 else ",".join(self.rules)


def _first_lr(optimizers: Sequence[torch.optim.Optimizer]) -> float | None:
    return float(optimizers[0].param_groups[0]["lr"]) if optimizers else None


def scale_learning_rates(
    setting: str,
    optimizers: Sequence[torch.optim.Optimizer],
    scheduler_configs: Sequence[Any],
    new_batch_size: int,
    old_batch_size: int,
) -> Scaling:
    """Scale every param group's lr (and `initial_lr`) and the schedulers' `base_lrs` of each optimizer."""
    before = _first_lr(optimizers)
    rules = []
    for opt in optimizers:
        rule = rule_for(setting, opt)
        rules.append(rule)
        f = factor(rule, new_batch_size, old_batch_size)
        if f == 1.0:
            continue
        for group in opt.param_groups:
            group["lr"] = group["lr"] * f
            if "initial_lr" in group:  # what a scheduler built before this starts from
                group["initial_lr"] = group["initial_lr"] * f
        for config in scheduler_configs:
            scheduler = config.scheduler
            if getattr(scheduler, "optimizer", None) is opt and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [lr * f for lr in scheduler.base_lrs]
                sync_last_lr(scheduler, [g["lr"] for g in opt.param_groups])
    return Scaling(rules=tuple(rules), lr_before=before, lr_after=_first_lr(optimizers))
