"""The run-wide monitored metric: chosen from what the module logs, a missing one fails before training."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from conftest import SMALL, run_cli
from mypkg import TinyRegressor
from torch.utils.data import DataLoader, TensorDataset

import wattwise
from wattwise.utils.errors import ConfigError
from wattwise.utils.monitor import choose, mode_for


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("val/acc", "max"),
        ("val/loss", "min"),
        ("val/mae", "min"),
        ("val/f1_macro", "max"),
        ("val/thing", None),
    ],
)
def test_mode_follows_the_metrics_name(name, mode):
    assert mode_for(name) == mode


def test_auto_prefers_accuracy_then_loss_and_names_what_is_logged():
    assert choose({"val/acc", "val/loss"})[:2] == ("val/acc", "max")
    assert choose({"val/loss", "val/mae"})[:2] == ("val/loss", "min")
    with pytest.raises(ConfigError, match="it logs val/mae"):
        choose({"val/mae"})
    with pytest.raises(ConfigError, match="monitor=val/acc is never logged"):
        choose({"val/loss"}, "val/acc")
    with pytest.raises(ConfigError, match="mode=min or mode=max"):
        choose({"val/thing"}, "val/thing")
    assert choose({"val/thing"}, "val/thing", "max")[:2] == ("val/thing", "max")


def test_the_default_run_monitors_accuracy_and_says_so(tmp_path):
    out = run_cli([*SMALL, "logger=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert (summary["monitor"], summary["mode"]) == ("val/acc", "max")
    assert "Monitoring val/acc (max): val/acc is logged" in out.stdout + out.stderr


def test_a_monitor_that_is_never_logged_fails_in_one_line_before_training(tmp_path):
    out = run_cli([*SMALL, "logger=none", "monitor=val/mae", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "monitor=val/mae is never logged" in err[0] and "Traceback" not in out.stderr
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained


def _fit(early_stop: dict, sanity: int = 2) -> L.Trainer:
    data = TensorDataset(torch.randn(64, 3), torch.randn(64, 1))
    callbacks, kwargs = wattwise.energy_callbacks(
        ["early_stop"], energy={"mode": "estimate"}, early_stop=early_stop
    )
    trainer = L.Trainer(
        max_epochs=2, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, accelerator="cpu", num_sanity_val_steps=sanity, **kwargs,
    )  # fmt: skip
    trainer.fit(TinyRegressor(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))
    return trainer


@pytest.mark.parametrize("sanity", [2, 0])
def test_early_stop_with_auto_picks_val_loss_on_a_regression_module(sanity):
    trainer = _fit({"monitor": "auto", "mode": "auto"}, sanity)
    stop = next(cb for cb in trainer.callbacks if getattr(cb, "name", "") == "early_stop")
    assert (stop.monitor, stop.mode, stop.sign) == ("val/loss", "min", -1.0)
    assert [r.metric is not None for r in stop.history] == [True, True]


def test_early_stop_on_a_never_logged_metric_fails_before_the_first_training_step():
    with pytest.raises(ConfigError, match="val/acc") as err:
        _fit({"monitor": "val/acc", "mode": "max"})
    assert "\n" not in str(err.value)
