"""Nets for 1D signals of shape (C, L), e.g. MNIST-1D's (1, 40). Each takes `input_shape` and `num_classes`.

- `Conv1DNet`: strided Conv1d-BN-ReLU blocks, then flatten and a linear head (the MNIST-1D paper's
  CNN keeps the positions too: it flattens rather than pooling). BatchNorm after each conv, as in
  models/nets.py, so torch-pruning can trace it and remove whole channels.
- `GRUNet`: a GRU over the time axis; classifies from the last hidden state.

Use them as `model=cnn1d` or `model=gru` (conf/model/), e.g. `python train.py data=mnist1d model=gru`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _signal_shape(input_shape: Sequence[int]) -> tuple[int, int]:
    if len(input_shape) == 1:  # (L,): a flat signal, one channel
        return 1, int(input_shape[0])
    if len(input_shape) != 2:
        raise ValueError(f"a 1D net needs input_shape (C, L) or (L,), got {tuple(input_shape)}")
    return int(input_shape[0]), int(input_shape[1])


class Conv1DNet(nn.Module):
    """Conv1d(k, stride)-BN-ReLU per entry of `channels`, flatten, linear."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 32, 32),
        kernel_size: int = 5,
        stride: int = 2,
    ) -> None:
        super().__init__()
        c, length = _signal_shape(input_shape)
        self.in_channels = c
        layers: list[nn.Module] = []
        for width in channels:
            layers += [
                nn.Conv1d(c, width, kernel_size, stride, kernel_size // 2, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(inplace=True),
            ]
            c = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            width = self.features.eval()(torch.zeros(1, self.in_channels, length)).shape[1]
        self.features.train()
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))


class GRUNet(nn.Module):
    """A GRU over (N, C, L) signals read as L steps of C features; a linear head on the last state."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, hidden: int = 64, num_layers: int = 1
    ) -> None:
        super().__init__()
        c, _ = _signal_shape(input_shape)
        self.gru = nn.GRU(c, hidden, num_layers=num_layers, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        _, h = self.gru(x.transpose(1, 2))  # (N, L, C) in, h: (layers, N, hidden)
        return self.classifier(h[-1])
