"""A user's own LightningModule, in the lightning-hydra-template convention: `net`, `optimizer` and
`scheduler` given to `__init__`; nothing of wattwise in it (no `on_load_checkpoint` of its own)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class UserClassifier(L.LightningModule):
    """Cross-entropy on (x, y) batches; logs loss and accuracy per stage as `<stage>/loss`, `<stage>/acc`."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        make = self.make_optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
        optimizer = make(params=self.parameters())
        if self.make_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.make_scheduler(optimizer=optimizer)}


class UserForecaster(L.LightningModule):
    """A regression module: MSE on dict batches, `val/loss` and `val/mae` logged (no accuracy), and
    its own ReduceLROnPlateau schedule on `val/loss` (it takes no `scheduler`)."""

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer] | None = None) -> None:
        super().__init__()
        self.net = net
        self.make_optimizer = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        pred = self(batch["x"])
        loss = F.mse_loss(pred, batch["y"])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        if stage != "train":
            self.log(f"{stage}/mae", F.l1_loss(pred, batch["y"]), on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        make = self.make_optimizer or (lambda params: torch.optim.Adam(params, lr=1e-3))
        optimizer = make(params=self.parameters())
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=2)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "val/loss"}}


class TinyRegressor(L.LightningModule):
    """The smallest user module: one Linear on (x, y) tuples, MSE, `val/loss` only, plain SGD."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(3, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)
