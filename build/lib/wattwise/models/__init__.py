"""The LightningModule and the networks it wraps."""

from wattwise.models.module import ClassifierModule
from wattwise.models.nets import CNN, MLP, ResNet18

__all__ = ["CNN", "MLP", "ClassifierModule", "ResNet18"]
