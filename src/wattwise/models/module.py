"""The LightningModule: a classifier around any `nn.Module`, with torchmetrics accuracy.

Optimizer and scheduler arrive as Hydra partials (`_partial_: true`), so a config
swaps them without code. `net` is passed in already built; to load a checkpoint,
build the same net and pass it: `ClassifierModule.load_from_checkpoint(path, net=net)`; a net
pruned during training (`+optim=prune`) is resized to the saved shapes before its weights load.

The loss is cross-entropy unless a method changes it through `loss_terms` (see `LossTerm`): a plain
list, not a submodule, so whatever a term holds (a distillation teacher) stays out of the module's
checkpoint, parameters and MAC counts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


class LossTerm(Protocol):
    """A change to the loss a method registers on `module.loss_terms` (no edit of the module).

    Called in order on every step after the cross-entropy is computed; returns the new loss. It sees
    the stage (`train`, `val`, `test`) and decides itself where it acts (distillation: train only),
    so the logged `val/loss` stays comparable across methods.
    """

    def __call__(self, loss: torch.Tensor, logits: torch.Tensor, batch: Any, stage: str) -> torch.Tensor: ...


class ClassifierModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        # Partials are not stored in checkpoints (they would not load with weights_only=True).
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, lr=1e-3)
        self.scheduler_factory = scheduler
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.loss_terms: list[LossTerm] = []  # methods append/remove theirs (methods/distill/callback.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        for term in self.loss_terms:
            loss = term(loss=loss, logits=logits, batch=batch, stage=stage)
        return loss, logits.argmax(dim=1), y

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, preds, y = self._step(batch)
        self.train_acc(preds, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, preds, y = self._step(batch, "val")
        self.val_acc(preds, y)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, preds, y = self._step(batch, "test")
        self.test_acc(preds, y)
        self.log("test/loss", loss, on_epoch=True)
        self.log("test/acc", self.test_acc, on_epoch=True)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Runs before the weights load: resize layers to a saved (e.g. pruned) architecture.

        In a Trainer with `+optim=prune` the method has resized them already (a no-op here); this
        is for `load_from_checkpoint` and runs without the method."""
        from wattwise.methods.shared.structure import restore_structure

        restore_structure(self, checkpoint)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }
