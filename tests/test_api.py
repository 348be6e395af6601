"""The public API for a user's own script: wattwise.energy_callbacks, wattwise.figures, the method classes."""

from __future__ import annotations

import json
import subprocess
import sys

import lightning as L
import pytest
import torch
from conftest import ROOT
from mypkg import TinyRegressor
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import wattwise
from wattwise.api import FiguresToLoggers
from wattwise.energy.monitor import EnergyMonitor
from wattwise.methods import registry
from wattwise.methods.amp import callback as amp_callback
from wattwise.utils.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_bf16(monkeypatch):
    monkeypatch.setattr(amp_callback, "cpu_bf16_supported", lambda: False)


def test_every_method_is_importable_under_its_option_name():
    classes = registry.method_classes()
    assert len(classes) >= 10
    for name, cls in classes.items():
        assert getattr(wattwise, cls.__name__) is cls, name
    with pytest.raises(AttributeError):
        wattwise.NoSuchMethod  # noqa: B018


def test_energy_callbacks_orders_monitor_methods_and_applies_settings():
    callbacks, kwargs = wattwise.energy_callbacks(["early_stop", "prune"], early_stop={"window": 3})
    assert isinstance(callbacks[0], EnergyMonitor) and isinstance(callbacks[-1], FiguresToLoggers)
    names = [cb.name for cb in callbacks[1:-1]]
    assert names == [m.name for m in registry.ordered(callbacks[1:-1])] and set(names) == {
        "early_stop",
        "prune",
    }
    by_name = {cb.name: cb for cb in callbacks[1:-1]}
    assert by_name["early_stop"].settings.window == 3
    assert by_name["early_stop"].energy_monitor is callbacks[0]  # services handed in, no lookup
    assert kwargs == {}


def test_a_recipe_expands_to_its_members_each_free_to_step_aside():
    callbacks, _ = wattwise.energy_callbacks(["green"], energy={"mode": "estimate"})
    methods = [cb for cb in callbacks if hasattr(cb, "if_not_applicable")]
    assert {m.name for m in methods} == set(registry.recipe_members("green"))
    assert all(m.if_not_applicable == "skip" for m in methods)


def test_amp_hands_its_precision_to_the_trainer_arguments():
    _, kwargs = wattwise.energy_callbacks(["amp"], amp={"precision": "bf16-mixed"})
    assert kwargs == {"precision": "bf16-mixed"}


@pytest.mark.parametrize(
    ("args", "settings", "key"),
    [(["no_such"], {}, "no_such"), (["prune"], {"early_stop": {"window": 3}}, "early_stop")],
)
def test_bad_options_fail_in_one_line(args, settings, key):
    with pytest.raises(ConfigError) as err:
        wattwise.energy_callbacks(args, **settings)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_a_bad_setting_names_its_key():
    with pytest.raises(ConfigError, match="callbacks.early_stop.window"):
        wattwise.energy_callbacks(["early_stop"], early_stop={"window": 0})


def test_figures_reach_the_trainers_loggers_without_train_py(tmp_path):
    data = TensorDataset(torch.randn(64, 3), torch.randn(64, 1))
    callbacks, kwargs = wattwise.energy_callbacks(
        ["early_stop"], energy={"mode": "estimate"}, early_stop={"monitor": "val/loss", "mode": "min"}
    )
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = L.Trainer(
        max_epochs=2, callbacks=callbacks, logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, accelerator="cpu", **kwargs,
    )  # fmt: skip
    trainer.fit(TinyRegressor(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))
    figures = wattwise.figures(trainer)
    assert figures["energy/source"] == "estimate" and figures["energy/total_J"] > 0
    assert figures["early_stop/status"] == "active" and figures["stop/reason"] == "max_epochs"
    logged = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "energy/total_J" in logged.split(",") and "stop/epoch" in logged.split(",")


@pytest.mark.slow
def test_the_readme_example_script_runs():
    script = ROOT / "examples" / "own_lightning_project.py"
    assert "examples/own_lightning_project.py" in (ROOT / "README.md").read_text()
    out = subprocess.run(
        [sys.executable, str(script), "--epochs", "2", "--samples", "400"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout[out.stdout.index("{") :])
    assert figures["energy/source"] == "estimate" and figures["stop/reason"] == "max_epochs"
    assert figures["prune/status"] == "skipped" and figures["prune/skipped"]  # green steps aside, says why


def test_the_net_a_method_acts_on_follows_one_rule():
    from wattwise.methods.shared.target import target_net

    plain = TinyRegressor()
    assert target_net(plain) is plain.net  # the `net` attribute

    class NoNet(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(2, 2)

    no_net = NoNet()
    assert target_net(no_net) is no_net  # else the module itself

    class Override(TinyRegressor):
        def energy_target_net(self) -> nn.Module:
            return self.net

    override = Override()
    override.net = nn.Sequential(nn.Linear(3, 1))
    assert target_net(override) is override.net


def test_green_on_loaders_given_to_fit_steps_aside_where_it_needs_a_datamodule():
    """No datamodule: prune has nothing to trace the net with, data_cache nothing to cache; both say so."""
    data = TensorDataset(torch.randn(64, 3), torch.randn(64, 1))
    callbacks, kwargs = wattwise.energy_callbacks(
        ["green"], energy={"mode": "estimate"}, early_stop={"monitor": "val/loss", "mode": "min"}
    )
    trainer = L.Trainer(
        max_epochs=1, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, accelerator="cpu", **kwargs,
    )  # fmt: skip
    trainer.fit(TinyRegressor(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))
    figures = wattwise.figures(trainer)
    assert figures["prune/status"] == "skipped" and "input_shape" in figures["prune/skipped"]
    assert figures["data_cache/status"] == "skipped"


def test_shipped_settings_follow_train_yaml_s_run_wide_keys():
    """`${monitor}`/`${mode}`/`${seed}` in a method's config take train.yaml's defaults, as in train.py."""
    callbacks, _ = wattwise.energy_callbacks(["early_stop", "data_cache"])
    by_name = {cb.name: cb for cb in callbacks if hasattr(cb, "if_not_applicable")}
    assert (by_name["early_stop"].monitor, by_name["early_stop"].mode) == ("auto", "auto")
    assert by_name["data_cache"].settings.seed == 42
