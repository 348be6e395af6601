"""CIFAR-10 from the original python pickles, downloaded into `data/` on request.

No torchvision needed (its PyPI wheels do not always match the installed torch).
The download runs only when `download: true` and the files are missing; tests use
a tiny archive in the same format and never touch the network.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from wattwise.data.base import TensorDataModule
from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"


# What the CIFAR-10 python batches hold: dicts, lists, bytes and numpy arrays. Nothing else is
# built, so a batch file swapped for a crafted pickle cannot call code while it is read.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 writes bytes: str -> bytes, no side effects
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            d = _ArraysOnly(f, encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(
            f"data.data_dir: {path} is not a CIFAR-10 python batch ({err}); delete it and download again "
            "with data.download=true"
        ) from None
    return x, np.asarray(d[b"labels"], dtype=np.int64)


class CIFAR10DataModule(TensorDataModule):
    """CIFAR-10: 50k train (val carved out of it) and the official 10k test images."""

    input_shape = (3, 32, 32)
    num_classes = 10
    # The pickles are decoded once, in setup(), into normalised tensors: a sample is a tensor row, so
    # `num_workers: auto` keeps 0 workers (wattwise.data.loader_settings).
    data_in_memory = True

    def __init__(
        self, data_dir: str = "data", download: bool = False, md5: str | None = MD5, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir)
        self.download = download
        self.md5 = md5
        if not download and not self._present():  # fail before training starts, not in setup()
            raise ConfigError(
                f"data.data_dir: CIFAR-10 not found in {self.data_dir / FOLDER}. "
                "Set data.download=true to fetch it "
                f"(~170 MB), or place the extracted '{FOLDER}' folder there."
            )

    def _present(self) -> bool:
        return all((self.data_dir / FOLDER / f).exists() for f in [*TRAIN_FILES, TEST_FILE])

    def prepare_data(self) -> None:
        if self._present():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        archive = self.data_dir / "cifar-10-python.tar.gz"
        if not archive.exists():
            log.info("Downloading CIFAR-10 into %s", archive)
            urllib.request.urlretrieve(URL, archive)
        if self.md5 and hashlib.md5(archive.read_bytes()).hexdigest() != self.md5:
            raise RuntimeError(f"{archive} is corrupt (md5 mismatch); delete it and run again")
        with tarfile.open(archive) as tar:
            tar.extractall(self.data_dir, filter="data")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()
        folder = self.data_dir / FOLDER
        xs, ys = zip(*(_read_batch(folder / f) for f in TRAIN_FILES))
        x = torch.from_numpy(np.concatenate(xs)).float() / 255.0
        y = torch.from_numpy(np.concatenate(ys))
        xt, yt = _read_batch(folder / TEST_FILE)
        x_test, y_test = torch.from_numpy(xt).float() / 255.0, torch.from_numpy(yt)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        n_val = round(len(x) * self.val_fraction)
        val, train = perm[:n_val], perm[n_val:]
        mean = x[train].mean(dim=(0, 2, 3), keepdim=True)
        std = x[train].std(dim=(0, 2, 3), keepdim=True)
        norm = lambda t: (t - mean) / std  # noqa: E731
        self.splits = {
            "train": TensorDataset(norm(x[train]), y[train]),
            "val": TensorDataset(norm(x[val]), y[val]),
            "test": TensorDataset(norm(x_test), y_test),
        }
