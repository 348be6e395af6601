"""LightningDataModules. Each exposes `input_shape` (C, H, W) and `num_classes`."""

from wattwise.data.base import TensorDataModule
from wattwise.data.cifar10 import CIFAR10DataModule
from wattwise.data.digits import DigitsDataModule
from wattwise.data.mnist1d import MNIST1DDataModule
from wattwise.data.synthetic import SyntheticDataModule

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "MNIST1DDataModule",
    "SyntheticDataModule",
    "TensorDataModule",
]
