"""The LightningModule: a classifier around any `nn.Module`, with its loss and accuracy per epoch.

Optimizer and scheduler arrive as Hydra partials (`_partial_: true`), so a config
swaps them without code. `net` is passed in already built; to load a checkpoint,
build the same net and pass it: `ClassifierModule.load_from_checkpoint(path, net=net)`; a net
pruned during training (`+optim=prune`) is resized to the saved shapes before its weights load.

The loss is cross-entropy unless a method changes it through `loss_terms` (see `LossTerm`): a plain
list, not a submodule, so whatever a term holds (a distillation teacher) stays out of the module's
checkpoint, parameters and MAC counts.

The metrics are computed where they are read: a step only adds its loss (times its batch size) and
its count of correct predictions to running sums on the device (no per-batch value, no sync); the
epoch's mean loss and accuracy are logged once, when the epoch's last batch is done (before the
epoch-end callbacks read them) or at the epoch's end, after one sum over the processes
(`strategy.reduce`: under DDP the figures are the whole data's, on one device a no-op). `self.log`
per step cost more than the net's forward pass on small nets (Lightning moves and copies its result
record on every call), and torchmetrics' `MulticlassAccuracy.update` cost 66 us a step against 6 us
for a count (CPU, batch 64). The figures are the ones Lightning's `on_epoch` mean gave: the
batch-size-weighted mean loss and the micro accuracy over the epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class LossTerm(Protocol):
    """A change to the loss a method registers on `module.loss_terms` (no edit of the module).

    Called in order on every step after the cross-entropy is computed; returns the new loss. It sees
    the stage (`train`, `val`, `test`) and decides itself where it acts (distillation: train only),
    so the logged `val/loss` stays comparable across methods.
    """

    def __call__(self, loss: torch.Tensor, logits: torch.Tensor, batch: Any, stage: str) -> torch.Tensor: ...


@dataclass
class _EpochSums:
    """A stage's running sums over the epoch so far, on the device: loss x batch size, correct
    predictions, and samples."""

    loss: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    count: int = 0


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
        self.loss_terms: list[LossTerm] = []  # methods append/remove theirs (methods/distill/callback.py)
        self._sums: dict[str, _EpochSums] = {}  # stage -> this epoch's running sums, not yet logged

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

    def _accumulate(self, stage: str, loss: torch.Tensor, preds: torch.Tensor, y: torch.Tensor) -> None:
        """Add one batch to the stage's running sums (on the device: no sync, no `self.log`)."""
        sums = self._sums.get(stage)
        if sums is None:
            sums = self._sums[stage] = _EpochSums()
        n = int(y.shape[0])
        weighted = loss.detach() * n
        correct = (preds == y).sum()
        sums.loss = weighted if sums.loss is None else sums.loss + weighted
        sums.correct = correct if sums.correct is None else sums.correct + correct
        sums.count += n

    def _log_epoch(self, stage: str) -> None:
        """Log the stage's epoch figures once, from the running sums, and start new sums."""
        sums = self._sums.pop(stage, None)
        if sums is None or sums.loss is None or sums.count == 0:
            return
        loss_sum = sums.loss.float()
        totals = torch.stack([loss_sum, sums.correct.to(loss_sum), loss_sum.new_tensor(float(sums.count))])
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")  # over the processes (DDP)
        loss, acc = totals[0] / totals[2], totals[1] / totals[2]
        if stage == "train":
            self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("train/acc", acc, on_step=False, on_epoch=True)
        else:
            prog_bar = stage == "val"
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=prog_bar)
            self.log(f"{stage}/acc", acc, on_epoch=True, prog_bar=prog_bar)

    def _reset_epoch(self, stage: str) -> None:
        self._sums.pop(stage, None)

    def _last_train_batch(self) -> bool:
        """Is the batch that just ended the epoch's last (its batch count, the loader's end, max_steps)?"""
        trainer = self.trainer
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch or progress.current.ready >= trainer.num_training_batches:
            return True
        return trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, preds, y = self._step(batch)
        self._accumulate("train", loss, preds, y)
        return loss

    def on_train_epoch_start(self) -> None:
        # Steps run outside the fit loop before this (a batch-size search) are not this epoch's.
        self._reset_epoch("train")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Logged here, at the last batch, so callbacks that read train/* at the epoch's end see it.
        if "train" in self._sums and self._last_train_batch():
            self._log_epoch("train")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")  # an epoch cut short (should_stop mid-epoch): what it trained on

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, preds, y = self._step(batch, "val")
        self._accumulate("val", loss, preds, y)

    def on_validation_epoch_start(self) -> None:
        self._reset_epoch("val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, preds, y = self._step(batch, "test")
        self._accumulate("test", loss, preds, y)

    def on_test_epoch_start(self) -> None:
        self._reset_epoch("test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

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
