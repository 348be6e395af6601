"""wattwise's methods in your own Lightning project: your module, your data, your metric, a plain Trainer.

    python examples/own_lightning_project.py            # a small regression task on the CPU
    python examples/own_lightning_project.py --epochs 20

Nothing here is wattwise's own model or data: a LightningModule that regresses a noisy sine
with MSE, logs `val/loss` (no accuracy anywhere), and keeps its trainable net in `self.net` (the
rule the methods use to find it). `wattwise.energy_callbacks` gives the energy monitor and the
`green` methods in order, with the Trainer arguments they need; each method steps aside where it
does not apply and says why.
"""

from __future__ import annotations

import argparse
import json

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import wattwise


class SineRegressor(L.LightningModule):
    """The user's own module: MSE on a noisy sine, `val/loss` logged, Adam with a plateau scheduler."""

    def __init__(self, width: int = 64, lr: float = 1e-2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
        )
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self(x), y), prog_bar=True)

    def configure_optimizers(self) -> dict:
        opt = torch.optim.Adam(self.parameters(), lr=self.lr)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val/loss"}}


class SineData(L.LightningDataModule):
    """The user's own data: a noisy sine, 80/20 train/validation, batches as (x, y) tuples."""

    def __init__(self, samples: int = 2000, batch_size: int = 64) -> None:
        super().__init__()
        self.samples, self.batch_size = samples, batch_size

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(self.samples, 1, generator=g) * 6.28
        y = torch.sin(x) + 0.1 * torch.randn(self.samples, 1, generator=g)
        cut = int(0.8 * self.samples)
        self.train_set, self.val_set = TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    torch.manual_seed(0)
    callbacks, trainer_kwargs = wattwise.energy_callbacks(
        ["green"],
        energy={"mode": "estimate"},  # or "auto": NVML on a GPU, RAPL where readable
        early_stop={"monitor": "val/loss", "mode": "min"},
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        **trainer_kwargs,
    )
    trainer.fit(SineRegressor(), datamodule=SineData(args.samples))
    figures = wattwise.figures(trainer)
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=1, default=str))
    return figures


if __name__ == "__main__":
    main()
