"""torch-pruning's private names wattwise uses (checked against torch-pruning 1.6.1; pinned <1.7).

- `_helpers.to_plain_idxs`: a dependency's indices as plain ints;
- `BasePruningFunc._prune_parameter_and_grad`: every tensor torch-pruning shrinks goes through it,
  so wrapping it records which rows were kept (the optimizer state is sliced to match);
- a pruner's `_scope_initial_channels`: the original widths, restored on a resumed schedule.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

CHECKED_WITH = "torch-pruning==1.6.1"
PRIVATE_NAMES = (
    "torch_pruning._helpers.to_plain_idxs",
    "torch_pruning.pruner.function.BasePruningFunc._prune_parameter_and_grad",
    "torch_pruning.pruner.algorithms.base_pruner.BasePruner._scope_initial_channels",  # instance attr
)
INSTANCE_ATTRIBUTES = {"_scope_initial_channels"}


def to_plain_idxs(idxs: Any) -> list[int]:
    from torch_pruning._helpers import to_plain_idxs as plain

    return [int(i) for i in plain(idxs)]


@contextlib.contextmanager
def wrapped_prune_parameter(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Run the block with `BasePruningFunc._prune_parameter_and_grad` replaced by `wrap(original)`."""
    from torch_pruning.pruner.function import BasePruningFunc

    original = BasePruningFunc._prune_parameter_and_grad
    BasePruningFunc._prune_parameter_and_grad = wrap(original)
    try:
        yield
    finally:
        BasePruningFunc._prune_parameter_and_grad = original


def scope_initial_channels(pruner: Any) -> dict[Any, int]:
    return pruner._scope_initial_channels


def set_scope_initial_channels(pruner: Any, value: dict[Any, int]) -> None:
    pruner._scope_initial_channels = value
