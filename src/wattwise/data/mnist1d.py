"""MNIST-1D (Greydanus & Steinbach), generated offline: 40-sample 1D signals of the ten digits.

The `mnist1d` package's `make_dataset(get_dataset_args())` builds the data procedurally from ten
templates (padding, translation, correlated and white noise, shear), so nothing is downloaded; its
`get_dataset` (which fetches a pickle from GitHub) is never called. The generator is deterministic
for given arguments; the arrays are cached under `data_dir` as an .npz file named by those
arguments, so a second run loads them in milliseconds instead of regenerating them (seconds).

Splits: the generator's own train/test cut (`train_split`); the validation set is carved out of
the training part with `split_seed`. At the defaults (10,000 samples, train_split 0.5) the test set
has 5,000 samples: the standard error of an accuracy p is sqrt(p(1-p)/5000), 0.34 points at 94%,
0.40 at 91% and 0.66 at 68% (the MNIST-1D paper's CNN, GRU and MLP figures).

`flatten=true` serves the same signals as 40 features, shape (40,): the tabular form for an MLP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from wattwise.data.base import TensorDataModule

log = logging.getLogger(__name__)

SEQ_LEN = 40  # the package's final_seq_length; fixed here so input_shape is known before setup


def generation_args(num_samples: int, train_split: float, data_seed: int) -> dict[str, Any]:
    """The generator's full argument dict: the package's defaults with our three fields set."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.update(num_samples=int(num_samples), train_split=float(train_split), seed=int(data_seed))
    args.pop("url", None)  # only the downloading get_dataset reads it
    if args.get("final_seq_length") != SEQ_LEN:
        raise RuntimeError(
            f"mnist1d's final_seq_length is {args.get('final_seq_length')}, expected {SEQ_LEN}"
        )
    return args


def cache_path(data_dir: str | Path, args: dict[str, Any]) -> Path:
    """Where the arrays for `args` live: readable fields plus a hash of every argument."""
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    name = f"mnist1d_n{args['num_samples']}_split{args['train_split']}_seed{args['seed']}_{digest}.npz"
    return Path(data_dir) / "mnist1d" / name


_GENERATED: dict[str, dict[str, np.ndarray]] = {}  # this process's generated arrays, by their args


def generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """The generator's arrays for `args`, made once per process (sweeps and tests build many runs)."""
    key = json.dumps(args, sort_keys=True)
    if key not in _GENERATED:
        _GENERATED[key] = _make(args)
    return {k: v.copy() for k, v in _GENERATED[key].items()}


def _make(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run the package's generator on `args`, leaving Python's and NumPy's global RNGs as they were
    (make_dataset reseeds both globally)."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": np.asarray(d["x"], dtype=np.float32),
        "y": np.asarray(d["y"], dtype=np.int64),
        "x_test": np.asarray(d["x_test"], dtype=np.float32),
        "y_test": np.asarray(d["y_test"], dtype=np.int64),
    }


def load_or_generate(args: dict[str, Any], data_dir: str | Path | None) -> dict[str, np.ndarray]:
    """The arrays for `args`: from the cache when present, else generated (and cached)."""
    path = cache_path(data_dir, args) if data_dir is not None else None
    if path is not None and path.exists():
        with np.load(path) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    arrays = generate(args)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: parallel runs (a sweep) never read a half-written file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        os.close(fd)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, args=json.dumps(args, sort_keys=True))
        os.replace(tmp, path)
        log.info("MNIST-1D generated and cached in %s", path)
    return arrays


class MNIST1DDataModule(TensorDataModule):
    """MNIST-1D generated offline: inputs (N, 1, 40) float32 (or (N, 40) with `flatten`), 10 classes."""

    num_classes = 10

    def __init__(
        self,
        num_samples: int = 10_000,
        train_split: float = 0.5,
        data_seed: int = 42,
        data_dir: str | None = "data",
        flatten: bool = False,
        **kwargs: Any,
    ) -> None:
        if "test_fraction" in kwargs:
            raise ValueError(
                "data.test_fraction does not apply to MNIST-1D: the test set is the generator's own "
                "(1 - data.train_split) share"
            )
        kwargs.setdefault("val_fraction", 0.2)
        super().__init__(**kwargs)
        if num_samples < 20:
            raise ValueError(f"data.num_samples must be at least 20, got {num_samples}")
        if not 0 < train_split < 1:
            raise ValueError(f"data.train_split must be in (0, 1), got {train_split}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        self.num_samples = num_samples
        self.train_split = train_split
        self.data_seed = data_seed
        self.data_dir = data_dir
        self.flatten = flatten
        self.input_shape = (SEQ_LEN,) if flatten else (1, SEQ_LEN)

    @property
    def args(self) -> dict[str, Any]:
        return generation_args(self.num_samples, self.train_split, self.data_seed)

    def prepare_data(self) -> None:
        load_or_generate(self.args, self.data_dir)  # generate once, on one process, into the cache

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = load_or_generate(self.args, self.data_dir)
        x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
        x_test, y_test = torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"])
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        n_val = round(len(x) * self.val_fraction)
        val, train = perm[:n_val], perm[n_val:]
        mean, std = x[train].mean(), x[train].std().clamp_min(1e-6)
        shape = (-1, *self.input_shape)

        def prep(t: torch.Tensor) -> torch.Tensor:
            return ((t - mean) / std).reshape(shape).contiguous()

        self.splits = {
            "train": TensorDataset(prep(x[train]), y[train]),
            "val": TensorDataset(prep(x[val]), y[val]),
            "test": TensorDataset(prep(x_test), y_test),
        }
