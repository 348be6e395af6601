"""Synthetic images with learnable labels, for throughput and energy benchmarks.

Labels come from a fixed random linear "teacher", so accuracy rises as a model
learns; nothing is downloaded and the size is whatever the benchmark needs.
"""

from __future__ import annotations

import torch

from wattwise.data.base import TensorDataModule


class SyntheticDataModule(TensorDataModule):
    def __init__(
        self,
        num_samples: int = 4096,
        channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        data_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_samples < 10:
            raise ValueError(f"data.num_samples must be at least 10, got {num_samples}")
        self.num_samples = num_samples
        self.input_shape = (channels, image_size, image_size)
        self.num_classes = num_classes
        self.data_seed = data_seed

    def load_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.data_seed)
        x = torch.randn(self.num_samples, *self.input_shape, generator=g)
        teacher = torch.randn(x[0].numel(), self.num_classes, generator=g)
        y = (x.flatten(1) @ teacher).argmax(dim=1)
        return x, y
