"""Plain LightningDataModules: 1D signals (an MNIST-1D-like task), token sequences, tiny images."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class _Splits(L.LightningDataModule):
    def _set(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        n = len(x)
        cut1, cut2 = int(n * 0.7), int(n * 0.85)
        self.train_set = TensorDataset(x[:cut1], y[:cut1])
        self.val_set = TensorDataset(x[cut1:cut2], y[cut1:cut2])
        self.test_set = TensorDataset(x[cut2:], y[cut2:])
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=128)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=128)


class SignalDataModule(_Splits):
    """1D signals (N, 1, length): each class a smooth template, shifted and noisy."""

    def __init__(
        self, num_samples: int = 600, length: int = 40, classes: int = 10, batch_size: int = 32
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        templates = torch.nn.functional.interpolate(torch.randn(classes, 1, 8, generator=g), size=length)
        y = torch.randint(0, classes, (num_samples,), generator=g)
        shifts = torch.randint(-3, 4, (num_samples,), generator=g)
        x = torch.stack([torch.roll(templates[c], int(s), dims=-1) for c, s in zip(y, shifts)])
        x = x + 0.3 * torch.randn(x.shape, generator=g)
        self._set(x, y, batch_size)
        self.input_shape = (1, length)
        self.num_classes = classes


class TokenDataModule(_Splits):
    """Next-character prediction over Python's own source text: token ids (N, seq_len), int64."""

    def __init__(self, seq_len: int = 16, num_samples: int = 512, batch_size: int = 32) -> None:
        super().__init__()
        import inspect
        import json.decoder

        text = inspect.getsource(json.decoder)
        chars = sorted(set(text))
        ids = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
        g = torch.Generator().manual_seed(0)
        starts = torch.randint(0, len(ids) - seq_len - 1, (num_samples,), generator=g)
        x = torch.stack([ids[s : s + seq_len] for s in starts])
        y = torch.stack([ids[s + seq_len] for s in starts])
        self._set(x, y, batch_size)
        self.input_shape = (seq_len,)
        self.input_dtype = torch.long
        self.num_classes = len(chars)


class MyDataModule(_Splits):
    """Tiny 2D images (N, 1, 8, 8) of two shifted blobs: what the README's plug-in command loads."""

    input_shape = (1, 8, 8)
    num_classes = 2

    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 2, (320,), generator=g)
        x = torch.randn(320, 1, 8, 8, generator=g) + 2.0 * y.view(-1, 1, 1, 1)
        self._set(x, y, batch_size)


class _DictWindows(torch.utils.data.Dataset):
    """(window, next value) pairs as dicts: {"x": (1, length), "y": (1,)}."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class ForecastDataModule(L.LightningDataModule):
    """Forecasting: the next value of a noisy multi-sine from the last `length` values; dict batches."""

    num_classes = 1  # one output per sample: the nets' `num_classes` is the forecast's width

    def __init__(self, num_samples: int = 480, length: int = 32, batch_size: int = 32) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        t = torch.arange(num_samples + length + 1, dtype=torch.float32)
        series = torch.sin(t / 5) + 0.5 * torch.sin(t / 13) + 0.1 * torch.randn(len(t), generator=g)
        x = torch.stack([series[i : i + length] for i in range(num_samples)]).unsqueeze(1)
        y = series[length : length + num_samples].unsqueeze(1)
        cut1, cut2 = int(num_samples * 0.7), int(num_samples * 0.85)
        self.sets = {
            "train": _DictWindows(x[:cut1], y[:cut1]),
            "val": _DictWindows(x[cut1:cut2], y[cut1:cut2]),
            "test": _DictWindows(x[cut2:], y[cut2:]),
        }
        self.batch_size = batch_size
        self.input_shape = (1, length)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=64)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["test"], batch_size=64)
