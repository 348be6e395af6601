"""The example input torch-pruning traces the net with: a couple of real samples.

Real samples have the dtype and shape the net really takes (int64 token ids for a Transformer,
float images for a CNN). They are read without touching the global RNG (indexing the dataset,
or iterating a loader inside `torch.random.fork_rng`), so a run that prunes, or steps aside,
shuffles and initialises exactly like its baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wattwise.utils.errors import ConfigError

N_SAMPLES = 2


def _inputs_of(batch: Any) -> torch.Tensor | None:
    """The net's input in a batch: the batch itself, or its first element ((x, y) pairs)."""
    if torch.is_tensor(batch):
        return batch
    if isinstance(batch, list | tuple) and batch and torch.is_tensor(batch[0]):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("x", "input", "inputs", "input_ids", "image", "images"):
            if torch.is_tensor(batch.get(key)):
                return batch[key]
    return None


def _from_loader(loader: Any) -> torch.Tensor | None:
    if loader is None:
        return None
    if isinstance(loader, list | tuple):
        loader = loader[0] if loader else None
    dataset = getattr(loader, "dataset", None)
    collate = getattr(loader, "collate_fn", None)
    with torch.random.fork_rng(devices=[]):  # dataset transforms may draw random numbers
        if dataset is not None and collate is not None and hasattr(dataset, "__getitem__"):
            try:
                n = min(N_SAMPLES, len(dataset))
                x = _inputs_of(collate([dataset[i] for i in range(n)])) if n else None
                if x is not None:
                    return x
            except (TypeError, NotImplementedError, IndexError, KeyError):
                pass  # an iterable dataset: read the loader's first batch instead
        batch = next(iter(loader), None)
    x = _inputs_of(batch)
    return None if x is None else x[:N_SAMPLES]


def real_inputs(datamodule: Any) -> torch.Tensor | None:
    """A couple of samples' inputs from the datamodule's val loader, else its train loader."""
    if datamodule is None:
        return None
    for name in ("val_dataloader", "train_dataloader"):
        make = getattr(datamodule, name, None)
        if make is None:
            continue
        try:
            x = _from_loader(make())
        except (NotImplementedError, AttributeError, TypeError, RuntimeError):
            continue  # e.g. a datamodule without a val split
        if x is not None:
            return x
    return None


def example_input(
    datamodule: Any, net: nn.Module, input_shape: Sequence[int] | None, key: str
) -> torch.Tensor:
    """What to trace `net` with: `input_shape` (float noise) when set, else real samples.

    Falls back to noise of the datamodule's `input_shape` (and `input_dtype`, if it declares one)
    when no loader yields a batch.
    """
    ref = next(iter(net.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    float_dtype = ref.dtype if ref is not None and ref.dtype.is_floating_point else torch.float32
    x = None if input_shape is not None else real_inputs(datamodule)
    if x is None:
        shape = input_shape or getattr(datamodule, "input_shape", None)
        if shape is None:
            raise ConfigError(
                f"{key}.input_shape is needed: the datamodule yields no batch and has no `input_shape` to "
                f"trace the net with; set {key}.input_shape=[C,H,W] (one sample's shape)"
            )
        dtype = getattr(datamodule, "input_dtype", None) if input_shape is None else None
        g = torch.Generator().manual_seed(0)  # a private generator: the global RNG stays untouched
        if dtype is not None and not dtype.is_floating_point:
            x = torch.zeros(N_SAMPLES, *shape, dtype=dtype)
        else:
            x = torch.randn(N_SAMPLES, *shape, generator=g)
    if x.dtype.is_floating_point:
        x = x.to(float_dtype)
    return x.to(device)
