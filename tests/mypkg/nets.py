"""Plain nn.Modules covering what users train: MLP, 2D CNN, 1D CNN, GRU, Transformer on tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class UserMLP(nn.Module):
    """An MLP with its own default widths (not the bundled mlp.yaml's)."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64, 64)
    ) -> None:
        super().__init__()
        width = int(torch.tensor(list(input_shape)).prod())
        self.hidden = tuple(hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class MyNet(nn.Module):
    """The README's plug-in net: only `num_classes` from the contract, and a width of its own."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SmallCNN(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SignalCNN(nn.Module):
    """A 1D CNN over (N, C, length) signals."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(input_shape[0], channels, 5, padding=2),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class GRUNet(nn.Module):
    """A GRU over the time axis of (N, C, length) signals; classifies from the last hidden state."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.gru = nn.GRU(input_shape[0], hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x.transpose(1, 2))
        return self.head(out[:, -1])


class TokenTransformer(nn.Module):
    """A small Transformer encoder over token ids (N, seq_len), int64; predicts the next token."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        seq_len = int(input_shape[0])
        self.embed = nn.Embedding(num_classes, d_model)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2 * d_model, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(tokens) + self.pos[:, : tokens.shape[1]])
        return self.head(h[:, -1])


class LSTMNet(nn.Module):
    """An input projection, then an LSTM over the time axis of (N, C, length) signals; classifies
    from the last hidden state.

    torch-pruning fails half-way through pruning the projection's channels out of the LSTM (an
    `IndexError` with one layer, `assert layer.num_layers==1` with two): prune steps aside on it.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        features: int = 16,
        hidden: int = 32,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(input_shape[0], features)
        self.lstm = nn.LSTM(features, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.proj(x.transpose(1, 2)))
        return self.head(out[:, -1])


class PatchTransformer(nn.Module):
    """Patches of a (N, C, length) signal (a strided conv), a Transformer encoder, a `flatten(1)` head.

    torch-pruning's dependency graph gets the flattened tokens wrong (the head's input width no
    longer matches d_model x tokens after a prune): prune checks the pruned net and steps aside.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        patch: int = 5,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        channels, length = int(input_shape[0]), int(input_shape[1])
        self.patchify = nn.Conv1d(channels, d_model, patch, stride=patch)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2 * d_model, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model * (length // patch), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patchify(x).transpose(1, 2)  # (N, tokens, d_model)
        return self.head(self.encoder(tokens).flatten(1))
