"""A loader over tensors already on the training device: one index gather per leaf per batch.

A `DataLoader` over an in-memory dataset still reads every sample on its own (`dataset[i]`) and
stacks them (`default_collate`), then Lightning copies the batch to the device. `ResidentLoader`
holds each leaf of the data (inputs, labels, ...) as one tensor on the device and builds a batch
as `leaf[indices]` there: no per-sample Python, no host-to-device copy per step.

Which samples each step gets is torch's own `DistributedSampler`'s choice, also in a single
process (`num_replicas=1`): under DDP each rank gets its disjoint shard (the sampler pads the
last few indices by repeating the first ones when the count does not divide, unless
`drop_last`), and per-epoch reshuffling is `sampler.set_epoch(epoch)`, which Lightning's fit
loop calls on any loader that exposes a `.sampler` (lightning.fabric.utilities.data
`_set_sampler_epoch`). Lightning does not put a distributed sampler into loaders that are not
DataLoaders, so the sharding here is the only one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DistributedSampler, default_collate

from wattwise.compat.torch import TreeSpec, tree_unflatten


class _Length:
    """What DistributedSampler needs of a dataset: its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class ResidentLoader:
    """Batches gathered on the device from `leaves` (tensors of equal length), shaped by `spec`.

    `spec` is the tree structure of one collated batch (`torch.utils._pytree`), so a batch has
    the structure a DataLoader with `default_collate` would give (a TensorDataset: a list).
    """

    batch_sampler = None  # Lightning looks for one beside `.sampler`
    collate_fn = staticmethod(default_collate)  # how `dataset`'s samples became these tensors

    def __init__(
        self,
        leaves: Sequence[torch.Tensor],
        spec: TreeSpec,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        dataset: Any = None,
    ) -> None:
        if not leaves:
            raise ValueError("a resident loader needs at least one tensor")
        n = len(leaves[0])
        if any(len(t) != n for t in leaves):
            raise ValueError(f"the cached tensors differ in length: {[len(t) for t in leaves]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.leaves = list(leaves)
        self.dataset = dataset  # the dataset the tensors were read from (for callbacks that read samples)
        self.spec = spec
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.num_samples = n
        self.sampler = DistributedSampler(
            _Length(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )

    @property
    def device(self) -> torch.device:
        return self.leaves[0].device

    def __len__(self) -> int:
        per_rank = len(self.sampler)
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long, device=self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield tree_unflatten([t[idx] for t in self.leaves], self.spec)
