"""The method contract through the public API: every method and recipe in a plain `L.Trainer`.

The user's own regression LightningModule (tests/mypkg: dict batches, MSE, `val/loss`, its own
plateau scheduler) with `wattwise.energy_callbacks([option])`, no train.py: it trains, reports the
promised figures (or why it stepped aside), and a run resumed from a mid-run checkpoint ends in
the same state as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from fake_batch_model import FakeModel
from method_settings import ACT_QUICKLY
from mypkg import ForecastDataModule, SignalCNN, UserForecaster
from test_contract import checkpoint_file_state

import wattwise
from wattwise.methods import registry
from wattwise.methods.amp import callback as amp_callback
from wattwise.methods.base import STATUS_SKIPPED

OPTIONS = registry.method_names() + registry.recipe_names()


@pytest.fixture(autouse=True)
def _no_bf16(monkeypatch):
    monkeypatch.setattr(amp_callback, "cpu_bf16_supported", lambda: False)


def _settings(option: str) -> dict[str, dict[str, Any]]:
    """ACT_QUICKLY's `callbacks.<m>.<k>=<v>` overrides as energy_callbacks keyword settings."""
    members = registry.recipe_members(option) if option in registry.recipe_names() else [option]
    out: dict[str, dict[str, Any]] = {}
    for m in members:
        node = out.setdefault(m, {"if_not_applicable": "skip"})
        for override in ACT_QUICKLY.get(m, []):
            key, _, value = override.partition("=")
            node[key.split(".", 2)[2]] = yaml.safe_load(value.replace(":", ": "))
    if "early_stop" in members:  # the module logs val/loss: the run-wide default (auto) picks it
        out["early_stop"].update({"monitor": "auto", "mode": "auto"})
    if "batch_size" in members:
        # A scripted cost model instead of this host's timing: the full and the half run each choose
        # a size, and on a loaded machine their real measurements could pick different ones (seen:
        # 64 in one, 8 in the other). The real measurement path is the train.py matrix's.
        out["batch_size"]["measure"] = FakeModel().measure
    return out


def _fit(option: str, root: Path, epochs: int, ckpt: Path | None = None) -> tuple[L.Trainer, Path]:
    torch.manual_seed(0)
    callbacks, kwargs = wattwise.energy_callbacks([option], energy={"mode": "estimate"}, **_settings(option))
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_last=True, monitor=None)
    trainer = L.Trainer(
        max_epochs=epochs, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
        callbacks=[*callbacks, checkpoint], logger=L.pytorch.loggers.CSVLogger(root),
        enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )  # fmt: skip
    data = ForecastDataModule()
    module = UserForecaster(SignalCNN(data.input_shape, 1))
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    return trainer, root / "ckpt" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_in_a_plain_trainer_trains_reports_and_resumes(tmp_path, option):
    full, full_ckpt = _fit(option, tmp_path / "full", 2)
    _, half_ckpt = _fit(option, tmp_path / "half", 1)
    _, resumed_ckpt = _fit(option, tmp_path / "resumed", 2, ckpt=half_ckpt)
    a, b = checkpoint_file_state(full_ckpt), checkpoint_file_state(resumed_ckpt)
    assert (a["epoch"], a["global_step"], a["shapes"]) == (b["epoch"], b["global_step"], b["shapes"])
    for key in a["callbacks"]:
        assert b["callbacks"].get(key) == a["callbacks"][key], f"{key}'s state differs after a resume"
    figures = wattwise.figures(full)
    members = registry.recipe_members(option) if option in registry.recipe_names() else [option]
    for name in members:
        cls = registry.method_classes()[name]
        if figures[f"{name}/status"] == STATUS_SKIPPED:
            assert figures.get(f"{name}/skipped"), f"{name} stepped aside without saying why"
            continue
        missing = [k for k in cls.summary_keys if k not in figures]
        assert not missing, f"{name} promised {missing}"
