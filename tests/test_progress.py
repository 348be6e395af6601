"""The progress display: Lightning's tqdm bar in a terminal, one plain line per epoch in a log."""

from __future__ import annotations

import io

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from torch.utils.data import DataLoader, TensorDataset

from wattwise.models import MLP, ClassifierModule
from wattwise.utils.errors import ConfigError
from wattwise.utils.progress import LineProgress, is_interactive, progress_bar


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_terminal_keeps_lightnings_bar_and_a_log_gets_lines(monkeypatch):
    monkeypatch.setattr("sys.stdout", _Stream(tty=True))
    bar = progress_bar(refresh_rate=5)
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 5  # unchanged
    monkeypatch.setattr("sys.stdout", _Stream(tty=False))
    assert isinstance(progress_bar(refresh_rate=5), LineProgress)
    assert type(progress_bar(interactive=True)) is TQDMProgressBar
    monkeypatch.setattr("sys.stdout", _Stream(tty=True))
    assert isinstance(progress_bar(interactive=False), LineProgress)
    with pytest.raises(ConfigError, match="interactive"):
        progress_bar(interactive="sometimes")
    with pytest.raises(ConfigError, match="line_every_pct"):
        LineProgress(line_every_pct=-1)
    assert not is_interactive(object())  # no isatty at all: not a terminal


def _fit(progress: LineProgress, epochs: int, batches: int = 6) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16 * batches, 1, 8, 8), torch.randint(0, 3, (16 * batches,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[progress],
    )
    trainer.fit(ClassifierModule(MLP((1, 8, 8), 3), 3), loader, loader)


def test_a_log_gets_one_line_per_epoch_with_the_bars_figures_and_no_frames():
    out = _Stream(tty=False)
    _fit(LineProgress(stream=out), epochs=3)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"], text
    for line in lines:
        assert "6/6 batches" in line and "it/s" in line
        assert "train/loss=" in line and "val/loss=" in line and "val/acc=" in line


def test_a_long_epoch_also_gets_a_line_every_n_percent():
    out = _Stream(tty=False)
    _fit(LineProgress(line_every_pct=50, min_line_interval_s=0, stream=out), epochs=2)
    lines = out.getvalue().splitlines()
    assert [line.split()[1:4] for line in lines] == [
        ["1/2", "50%", "3/6"],
        ["1/2", "100%", "6/6"],
        ["2/2", "50%", "3/6"],
        ["2/2", "100%", "6/6"],
    ]
    quiet = _Stream(tty=False)  # a short epoch: the interval keeps it to the epoch's own line
    _fit(LineProgress(line_every_pct=50, min_line_interval_s=3600, stream=quiet), epochs=2)
    assert len(quiet.getvalue().splitlines()) == 2
