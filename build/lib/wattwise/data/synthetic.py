"""Synthetic images with learnable labels, for throughput and energy benchmarks.

Each class has a fixed smooth random template (4x4 noise upsampled to the image
size); a sample is its class's template plus Gaussian noise. A conv net learns it
within an epoch or two, so accuracy rises as in real training, while nothing is
downloaded and the size is whatever the benchmark needs. `noise` sets how hard it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wattwise.data.base import TensorDataModule


class SyntheticDataModule(TensorDataModule):
    def __init__(
        self,
        num_samples: int = 4096,
        channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        noise: float = 3.0,
        data_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_samples < 10:
            raise ValueError(f"data.num_samples must be at least 10, got {num_samples}")
        if noise < 0:
            raise ValueError(f"data.noise must be >= 0, got {noise}")
        self.num_samples = num_samples
        self.input_shape = (channels, image_size, image_size)
        self.num_classes = num_classes
        self.noise = noise
        self.data_seed = data_seed

    def load_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.data_seed)
        c, h, w = self.input_shape
        coarse = torch.randn(self.num_classes, c, 4, 4, generator=g)
        templates = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        templates = templates / templates.std()
        y = torch.randint(0, self.num_classes, (self.num_samples,), generator=g)
        x = templates[y] + self.noise * torch.randn(self.num_samples, c, h, w, generator=g)
        return x, y
