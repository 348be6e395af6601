"""Reading a DataLoader's map-style dataset into whole tensors, once, for the resident cache.

`plan_cache` looks at the loader and prices the cache before anything is copied (exact for
tensors, sample 0 x length for other datasets); `materialise` then builds one tensor per leaf
of a collated batch:

- a `TensorDataset` (or a `Subset` of one) gives its tensors directly;
- any other map-style dataset is read sample by sample, once, and collated in chunks with
  `default_collate` (what the DataLoader would have done per batch), so a cached batch has the
  same structure and dtypes as the loader's. Sample 0 is read twice first: a dataset whose
  samples change between reads (random augmentation) cannot be cached without freezing them.

What cannot be cached raises `NotCacheable` with the reason in words (the method steps aside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    default_collate,
)

from wattwise.compat.torch import TreeSpec, tree_flatten
from wattwise.data.base import collate_batches

CHUNK = 1024  # samples collated at a time when reading a dataset sample by sample


class NotCacheable(Exception):
    """This loader's data cannot be held as device tensors; the message says why."""


@dataclass
class CachePlan:
    """One split's data as found in its loader, and what caching it would take."""

    split: str
    dataset: Any
    length: int
    batch_size: int
    shuffle: bool
    drop_last: bool
    nbytes: int
    exact: bool  # False: estimated from sample 0


def _tensor_source(dataset: Any) -> tuple[list[torch.Tensor], torch.Tensor | None] | None:
    """(tensors, indices or None) for a TensorDataset or a Subset of one; None otherwise."""
    if isinstance(dataset, TensorDataset):
        return list(dataset.tensors), None
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        return list(dataset.dataset.tensors), torch.as_tensor(list(dataset.indices), dtype=torch.long)
    return None


def _collated_leaves(samples: list[Any]) -> tuple[list[torch.Tensor], TreeSpec]:
    try:
        batch = default_collate(samples)
    except (RuntimeError, TypeError) as err:  # samples of different shapes, or of no collatable type
        raise NotCacheable(
            f"its samples cannot be stacked into batches ({str(err).splitlines()[0]})"
        ) from err
    leaves, spec = tree_flatten(batch)
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            raise NotCacheable(
                f"a sample holds a {type(leaf).__name__}; only tensors, arrays and numbers can be cached"
            )
    return leaves, spec


def plan_cache(split: str, loader: Any) -> CachePlan:
    """What caching `loader`'s data would take; NotCacheable if it cannot be done faithfully."""
    if not isinstance(loader, DataLoader):
        raise NotCacheable(f"{split}_dataloader() returns a {type(loader).__name__}, not a DataLoader")
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset):
        raise NotCacheable(f"the {split} data is an iterable dataset, which has no length to cache")
    if loader.batch_size is None:
        raise NotCacheable(f"the {split} loader batches with its own batch_sampler")
    if loader.collate_fn not in (default_collate, collate_batches):  # the same batches as default_collate
        raise NotCacheable(f"the {split} loader has its own collate_fn")
    if not isinstance(loader.sampler, SequentialSampler | RandomSampler):
        raise NotCacheable(f"the {split} loader draws with its own sampler ({type(loader.sampler).__name__})")
    length = len(dataset)
    if length == 0:
        raise NotCacheable(f"the {split} data is empty")
    source = _tensor_source(dataset)
    if source is not None:
        tensors, _ = source
        nbytes, exact = sum(t[:1].nbytes for t in tensors) * length, True
    else:
        first, again = dataset[0], dataset[0]
        leaves, spec = _collated_leaves([first])
        leaves2, spec2 = _collated_leaves([again])
        if spec != spec2 or not all(torch.equal(a, b) for a, b in zip(leaves, leaves2, strict=True)):
            raise NotCacheable(
                f"the {split} dataset's samples change between reads (random augmentation?); "
                "caching would freeze them"
            )
        nbytes, exact = sum(t.nbytes for t in leaves) * length, False
    return CachePlan(
        split=split,
        dataset=dataset,
        length=length,
        batch_size=int(loader.batch_size),
        shuffle=isinstance(loader.sampler, RandomSampler),
        drop_last=bool(loader.drop_last),
        nbytes=int(nbytes),
        exact=exact,
    )


def materialise(plan: CachePlan, device: torch.device) -> tuple[list[torch.Tensor], TreeSpec]:
    """The split's data as one tensor per leaf on `device`, and the batch structure."""
    source = _tensor_source(plan.dataset)
    if source is not None:
        tensors, indices = source
        leaves = [t if indices is None else t[indices] for t in tensors]
        _, spec = tree_flatten(list(leaves))  # default_collate turns a tuple sample into a list
        return [t.to(device) for t in leaves], spec
    chunks: list[list[torch.Tensor]] = []
    spec: TreeSpec | None = None
    for start in range(0, plan.length, CHUNK):
        leaves, chunk_spec = _collated_leaves(
            [plan.dataset[i] for i in range(start, min(plan.length, start + CHUNK))]
        )
        if spec is not None and chunk_spec != spec:
            raise NotCacheable(f"the {plan.split} dataset's samples differ in structure")
        spec = chunk_spec
        chunks.append(leaves)
    assert spec is not None
    return [torch.cat([c[j] for c in chunks]).to(device) for j in range(len(chunks[0]))], spec
