"""The compat modules' private names exist in the pinned versions (fails on an upgrade that drops one)."""

from __future__ import annotations

import importlib
import inspect

import pytest

from wattwise.compat import resolve

MODULES = ["lightning", "torch", "torchmetrics", "torchao", "torch_pruning"]


def _cases() -> list[tuple[str, str]]:
    return [
        (m, dotted)
        for m in MODULES
        for dotted in importlib.import_module(f"wattwise.compat.{m}").PRIVATE_NAMES
    ]


@pytest.mark.parametrize(("module", "dotted"), _cases())
def test_private_name_exists_in_the_pinned_version(module: str, dotted: str):
    compat = importlib.import_module(f"wattwise.compat.{module}")
    assert compat.CHECKED_WITH
    owner_path, _, attr = dotted.rpartition(".")
    if attr in compat.INSTANCE_ATTRIBUTES:  # set in __init__ (or a method): look for the assignment
        owner = resolve(owner_path)
        sources = "".join(inspect.getsource(c) for c in inspect.getmro(owner) if c.__module__ != "builtins")
        assert f"self.{attr}" in sources, f"{dotted} is no longer set by {owner.__qualname__}"
    else:
        resolve(dotted)


def test_resolve_fails_for_a_name_that_is_gone():
    with pytest.raises(AttributeError):
        resolve("torch.utils._pytree.no_such_function_anywhere")


def test_instance_attributes_read_back_on_real_objects():
    import torch
    import torchmetrics

    from wattwise.compat import torch as ct
    from wattwise.compat import torchmetrics as ctm

    metric = torchmetrics.MeanMetric()
    metric.update(torch.tensor(1.0))
    assert ctm.update_count(metric) == 1
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    ct.sync_last_lr(sched, [0.5])
    assert sched.get_last_lr() == [0.5]
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    assert ct.initial_grad_scale(scaler) == 8.0
