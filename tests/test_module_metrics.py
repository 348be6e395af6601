"""ClassifierModule's metrics: running sums per step, the epoch's figures logged once, where they are read."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from wattwise.models import MLP, ClassifierModule


def _bare_trainer(**kwargs) -> L.Trainer:
    """A CPU Trainer with only the module's own logging: no logger, checkpoints, bar or sanity check."""
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def test_epoch_figures_are_logged_once_per_epoch_and_seen_by_epoch_end_callbacks():
    torch.manual_seed(0)
    x, y = torch.randn(100, 1, 8, 8), torch.randint(0, 3, (100,))
    train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)  # 7 batches, the last of 4
    val = DataLoader(TensorDataset(x[:40], y[:40]), batch_size=16)
    module = ClassifierModule(MLP((1, 8, 8), 3), 3)
    calls: list[str] = []
    real_log = module.log

    def counting_log(name, value, *args, **kwargs):
        calls.append(name)
        return real_log(name, value, *args, **kwargs)

    module.log = counting_log
    seen: dict[int, set[str]] = {}

    class Probe(L.Callback):  # not a monitoring callback: runs before the module's own epoch-end hook
        def on_train_epoch_end(self, trainer, pl_module):
            seen[trainer.current_epoch] = set(trainer.callback_metrics)

    trainer = _bare_trainer(max_epochs=3, callbacks=[Probe()])
    trainer.fit(module, train, val)
    assert sorted(calls) == sorted(["train/loss", "train/acc", "val/loss", "val/acc"] * 3)  # not per step
    assert all({"train/loss", "train/acc", "val/loss", "val/acc"} <= s for s in seen.values())
    module.eval()
    with torch.no_grad():
        logits = module(x[:40])
    m = trainer.callback_metrics  # the last validation ran on the final weights
    assert float(m["val/loss"]) == pytest.approx(float(F.cross_entropy(logits, y[:40])), rel=1e-5)
    assert float(m["val/acc"]) == pytest.approx(float((logits.argmax(1) == y[:40]).float().mean()))
    results = trainer.test(module, val, verbose=False)[0]
    assert results["test/acc"] == pytest.approx(float(m["val/acc"]))
    assert results["test/loss"] == pytest.approx(float(m["val/loss"]), rel=1e-5)


def test_epoch_figures_are_summed_over_the_processes_before_the_division(monkeypatch):
    """Under DDP each process holds its shard's sums; the logged figures are the whole data's."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    other = torch.tensor([30.0, 0.0, 10.0])  # a second process: loss x n = 30, 0 correct, 10 samples
    calls: list[str] = []

    real_reduce = SingleDeviceStrategy.reduce

    def reduce_with_another_process(self, tensor, group=None, reduce_op="mean"):
        if not isinstance(tensor, torch.Tensor) or tensor.shape != (3,):  # Lightning's own sums
            return real_reduce(self, tensor, group, reduce_op)
        calls.append(reduce_op)
        return tensor + other

    monkeypatch.setattr(SingleDeviceStrategy, "reduce", reduce_with_another_process)
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,))
    module = ClassifierModule(MLP((1, 8, 8), 3), 3)
    trainer = _bare_trainer(max_epochs=1)
    module.eval()
    with torch.no_grad():
        logits = module(x)
    results = trainer.test(module, DataLoader(TensorDataset(x, y), batch_size=16), verbose=False)[0]
    correct = float((logits.argmax(1) == y).sum())
    loss_sum = float(F.cross_entropy(logits, y)) * 40
    assert calls == ["sum"]
    assert results["test/acc"] == pytest.approx(correct / 50)
    assert results["test/loss"] == pytest.approx((loss_sum + 30.0) / 50, rel=1e-5)
