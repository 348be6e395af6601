"""A user's own datamodule and net, written without wattwise's base classes (plug-in test)."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TwoBlobs(L.LightningDataModule):
    input_shape = (1, 2, 2)
    num_classes = 2

    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 2, (256,), generator=g)
        self.data = TensorDataset(torch.randn(256, 1, 2, 2, generator=g) + 3.0 * y.view(-1, 1, 1, 1), y)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=64)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=64)


class TinyNet(nn.Module):
    def __init__(self, num_classes: int, hidden: int = 8) -> None:
        super().__init__()
        layers = [nn.Flatten(), nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
