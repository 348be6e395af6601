"""A teacher for the contract tests: one net that takes every zoo task's inputs (signals, images,
token ids) and gives `num_classes` logits, so `+optim=distill` runs on every net of the zoo."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FlatTeacher(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        width = int(torch.tensor(list(input_shape)).prod())
        self.body = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1).float())
