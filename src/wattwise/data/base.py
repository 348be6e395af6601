"""Shared plumbing for in-memory datasets: split once, serve tensors.

A datamodule tells the model builder what it holds through two attributes,
`input_shape` (C, H, W) and `num_classes`; any LightningDataModule with those
two plugs into `conf/data/*.yaml` by `_target_`.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset, default_collate

from wattwise.data.loader_settings import AUTO, LoaderSettings, choose_loader_settings
from wattwise.utils.threads import available_cores

log = logging.getLogger(__name__)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Shuffle 0..n-1 with a fixed seed and cut it into train/val/test index tensors."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"data.val_fraction and data.test_fraction must be in (0, 1) and sum below 1, "
            f"got {val_fraction} and {test_fraction}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]


class _Batch(list):
    """A batch `BatchedTensorDataset` gathered whole: one tensor per leaf, already collated."""


class BatchedTensorDataset(TensorDataset):
    """A `TensorDataset` whose loader batches are one index per tensor, not one read per sample.

    torch's DataLoader hands a whole batch of indices to `__getitems__` where a dataset has one;
    `collate_batches` then passes the gathered batch on as it is. A loader over an in-memory
    dataset otherwise reads every sample on its own (`dataset[i]`, a tuple of views) and stacks them
    (`default_collate`): on small nets that Python per sample cost as much as the training step.
    The batch is the same (the same rows, dtypes and structure: a list of tensors). A DataLoader
    over this dataset needs `collate_batches` as its collate_fn: the datamodule's loaders have it,
    and loaders rebuilt from them (Lightning's distributed sampler, distillation's ordered pass)
    carry it over; `dataset[i]` reads one sample as a TensorDataset does.
    """

    def __getitems__(self, indices: list[int]) -> _Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        return _Batch(t[index] for t in self.tensors)


def collate_batches(data: object) -> object:
    """The loaders' collate_fn: a `BatchedTensorDataset` batch as it is, anything else `default_collate`."""
    if isinstance(data, _Batch):
        return list(data)
    return default_collate(data)


class TensorDataModule(L.LightningDataModule):
    """A datamodule over tensors held in memory, split by a seed of its own.

    The split seed is separate from the run's `seed` so that every run of a sweep
    is tested on the same held-out samples. The loader settings (`num_workers`, `pin_memory`,
    `persistent_workers`, `prefetch_factor`) may each be `auto`: chosen for the device the
    trainer trains on (wattwise.data.loader_settings), logged once with the reasons.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    data_in_memory: bool = True  # samples are tensor rows, not decoded per read (see loader_settings)

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 1234,
        num_workers: int | str = AUTO,
        pin_memory: bool | str = AUTO,
        persistent_workers: bool | str = AUTO,
        prefetch_factor: int | str | None = AUTO,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self._choose_loader_settings("cpu")  # a bad data.<key> fails here, before training
        self.loader_settings: LoaderSettings | None = None  # what the loaders were built with
        self.splits: dict[str, TensorDataset] = {}

    def load_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (inputs float N x C x H x W, integer labels N)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        x, y = self.load_tensors()
        train, val, test = split_indices(len(x), self.val_fraction, self.test_fraction, self.split_seed)
        mean, std = x[train].mean(), x[train].std().clamp_min(1e-6)
        x = (x - mean) / std
        self.splits = {
            "train": TensorDataset(x[train], y[train]),
            "val": TensorDataset(x[val], y[val]),
            "test": TensorDataset(x[test], y[test]),
        }

    def _choose_loader_settings(self, accelerator: str) -> LoaderSettings:
        return choose_loader_settings(
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            data_in_memory=self.data_in_memory,
            accelerator=accelerator,
            cores=available_cores(),
        )

    def _current_loader_settings(self) -> LoaderSettings:
        """Settings for the device the attached trainer trains on (the CPU when detached); logged once."""
        trainer = self.trainer
        accelerator = trainer.strategy.root_device.type if trainer is not None else "cpu"
        settings = self._choose_loader_settings(accelerator)
        if settings != self.loader_settings:
            if self.loader_settings is None and (trainer is None or trainer.is_global_zero):
                log.info("Data loaders: %s", settings.describe())
            self.loader_settings = settings
        return settings

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        bs = self.batch_size if split == "train" else self.eval_batch_size
        dataset = self.splits[split]
        if type(dataset) is TensorDataset:  # a view that gathers whole batches (no copy)
            dataset = BatchedTensorDataset(*dataset.tensors)
        return DataLoader(
            dataset,
            batch_size=bs,
            shuffle=shuffle,
            collate_fn=collate_batches,
            **self._current_loader_settings().dataloader_kwargs(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
