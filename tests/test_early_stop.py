"""Energy-aware early stopping, checked exactly: the fake GPU burns fixed joules per batch and a
scripted module logs a chosen val/acc per epoch, so every stop epoch and joule is known in advance.

Energy per run with the fake GPU (tests/fake_gpu.py BurnCallback, 3 train + 2 val batches):
sanity check 2 x 0.5 = 1 J, then 3 x 1 + 2 x 0.5 = 4 J per epoch. After k epochs the fit has
spent 1 + 4k J.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fake_gpu import FakeGPU, install_fake_gpus

from wattwise.methods.base import NotApplicableError, StructureChange
from wattwise.methods.early_stop.callback import (
    EarlyStop,
    EpochRecord,
    budget_fired,
    diminishing_returns_fired,
    diminishing_returns_rates,
    patience_fired,
    target_fired,
)
from wattwise.models import ClassifierModule
from wattwise.train import train
from wattwise.utils.errors import ConfigError

TESTED: list[dict[str, str]] = []  # what ScriptedModule saw at test time


class ScriptedModule(ClassifierModule):
    """Trains for real but logs val/acc from a script (values[epoch]), so the rules see a known trajectory."""

    def __init__(self, net, num_classes, optimizer=None, scheduler=None, values: str = "") -> None:
        super().__init__(net, num_classes, optimizer=optimizer, scheduler=scheduler)
        self.values = [float(v) for v in values.split()]  # a string: checkpoints load with weights_only

    def validation_step(self, batch, batch_idx):
        loss, _, _ = self._step(batch)
        epoch = min(self.current_epoch, len(self.values) - 1)
        value = 0.0 if self.trainer.sanity_checking else self.values[epoch]
        self.log("val/loss", loss, on_epoch=True)
        self.log("val/acc", value, on_epoch=True)

    def on_test_start(self) -> None:
        ckpt = self.trainer.checkpoint_callback
        TESTED.append(
            {
                "ckpt_path": str(self.trainer.ckpt_path),
                "best": ckpt.best_model_path,
                "last": ckpt.last_model_path,
            }
        )


def _run(make_cfg, *overrides, values=None, optim="early_stop"):
    """Train with the fake GPU (and a scripted val/acc when `values` is given); return the summary."""
    extra = [
        f"+optim={optim}",
        "energy.gpu_index=0",
        "+callbacks.burn._target_=fake_gpu.BurnCallback",
    ]
    if values is not None:
        extra += [
            "model._target_=test_early_stop.ScriptedModule",
            f"+model.values='{' '.join(map(str, values))}'",
        ]
    cfg = make_cfg(*extra, *overrides)
    with install_fake_gpus([FakeGPU()]):
        train(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())


def _h(metrics, epoch_J=4.0):
    """A history with constant epoch cost (spent as the fake GPU would count it)."""
    return [EpochRecord(i, m, epoch_J, 1.0 + epoch_J * (i + 1)) for i, m in enumerate(metrics)]


# ---- settings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"budget_J": -5}, r"callbacks.early_stop.budget_J must be a number > 0, got -5"),
        ({"budget_kWh": 0}, r"budget_kWh must be a number > 0"),
        ({"budget_J": 10, "budget_kWh": 1}, r"budget_J or budget_kWh, not both"),
        ({"window": 0}, r"callbacks.early_stop.window must be an integer >= 1, got 0"),
        ({"window": 2.5}, r"window must be an integer"),
        ({"mode": "maximum"}, r"callbacks.early_stop.mode must be one of min, max, auto, got 'maximum'"),
        ({"min_gain_fraction": -0.1}, r"min_gain_fraction must be a number >= 0"),
        ({"diminishing_patience": 0}, r"diminishing_patience must be an integer >= 1"),
        ({"patience": 0}, r"callbacks.early_stop.patience must be an integer >= 1"),
        ({"target": float("nan")}, r"target must be a number"),
        ({"monitor": ""}, r"monitor must be the name of a logged metric"),
    ],
)
def test_bad_settings_fail_fast(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EarlyStop(**kwargs)


def test_budget_in_kWh_is_converted():
    assert EarlyStop(budget_kWh=0.001).budget_J == pytest.approx(3600.0)


def test_bad_setting_is_a_config_error(make_cfg):
    cfg = make_cfg("+optim=early_stop", "callbacks.early_stop.budget_J=-1")
    with pytest.raises(ConfigError, match="callbacks.early_stop.budget_J must be a number > 0, got -1"):
        train(cfg)


def test_monitor_never_logged_fails_naming_the_logged_metrics(make_cfg):
    with pytest.raises(ValueError, match=r"monitor='val/f1' was never logged\. Logged metrics: .*val/acc"):
        _run(make_cfg, "callbacks.early_stop.monitor=val/f1", "trainer.max_epochs=2")


def test_energy_rules_need_an_energy_measurement(make_cfg):
    cfg = make_cfg("+optim=early_stop", "energy=off")
    with pytest.raises(
        NotApplicableError, match="needs the run's energy to be measured.*if_not_applicable=skip"
    ):
        train(cfg)


def test_without_energy_inside_a_recipe_it_steps_aside(make_cfg):
    cfg = make_cfg("+optim=early_stop", "energy=off", "callbacks.early_stop.if_not_applicable=skip")
    train(cfg)
    s = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert s["status"] == "completed" and s["early_stop/status"] == "skipped"
    assert "energy" in s["early_stop/skipped"] and "stop/reason" not in s


# ---- the rules as pure functions (exact arithmetic) ------------------------------------------------------


def test_diminishing_returns_relative_threshold_by_hand():
    # 4 J (0.004 kJ) per epoch, window 2. At epoch 4: gain over the window = 0.80 - 0.70 = 0.10
    # -> 0.10 / 0.008 kJ = 12.5 per kJ; the run's average since epoch 0 = (0.80 - 0.40) / 0.016 kJ = 25
    # per kJ; 12.5 is half of that: below a fraction of 0.6, not below 0.4.
    h = _h([0.40, 0.60, 0.70, 0.75, 0.80])
    rate, threshold = diminishing_returns_rates(h, 1.0, 2, 0.6, None)[-1]
    assert rate == pytest.approx(12.5)
    assert threshold == pytest.approx(0.6 * 25.0)
    assert diminishing_returns_fired(h, 1.0, 2, 0.6, None, 1)
    assert not diminishing_returns_fired(h, 1.0, 2, 0.4, None, 1)
    # patience 2: epoch 3 (gain 0.15 / 0.008 = 18.75 vs 0.6 x (0.35 / 0.012) = 17.5) was not below
    assert not diminishing_returns_fired(h, 1.0, 2, 0.6, None, 2)
    # the same trajectory as a loss (mode min) gives the same decisions
    loss = _h([-m for m in [0.40, 0.60, 0.70, 0.75, 0.80]])
    assert diminishing_returns_fired(loss, -1.0, 2, 0.6, None, 1)
    # cheaper epochs buy the same gain with fewer joules: the absolute rule then lets them run on
    assert diminishing_returns_fired(h, 1.0, 2, None, 20.0, 1)
    assert not diminishing_returns_fired(
        _h([0.40, 0.60, 0.70, 0.75, 0.80], epoch_J=2.0), 1.0, 2, None, 20.0, 1
    )
    # no threshold set: the rule is off
    assert not diminishing_returns_fired(_h([0.5] * 10), 1.0, 2, None, None, 1)


def test_patience_target_and_budget_rules():
    h = _h([0.5, 0.7, 0.69, 0.70, 0.65])
    assert patience_fired(h, 1.0, 3, 0.0)
    assert not patience_fired(h, 1.0, 4, 0.0)
    assert patience_fired(_h([0.5, 0.7, 0.705]), 1.0, 1, 0.01)  # 0.005 < min_delta
    assert target_fired(_h([0.5, 0.9]), 1.0, 0.9) and not target_fired(_h([0.5, 0.89]), 1.0, 0.9)
    assert target_fired(_h([0.5, 0.1]), -1.0, 0.2)  # a loss reaching 0.2 or less
    # next epoch predicted as the largest of the last `window`: 13 J spent + 6 J > 18 J
    costs = [EpochRecord(0, None, 6.0, 7.0), EpochRecord(1, None, 3.0, 10.0), EpochRecord(2, None, 3.0, 13.0)]
    assert budget_fired(costs, 13.0, 18.0, window=3)
    assert not budget_fired(costs, 13.0, 18.0, window=2)  # last two epochs: 3 J
    assert not budget_fired(costs, 13.0, None, window=3)


# ---- whole runs, fake GPU -----------------------------------------------------------------------------


def test_budget_stops_before_the_budget_is_crossed(make_cfg):
    # 15 J: after 3 epochs 13 J are spent and a 4th (4 J) would make 17 J, so it stops at 13 J.
    # stop/energy_J == 13 also shows the ordering: our on_train_epoch_end ran after the monitor closed
    # the epoch (read before it, the spent energy would lag one epoch: 9 J).
    s = _run(make_cfg, "trainer.max_epochs=10", "callbacks.early_stop.budget_J=15")
    assert s["stop/reason"] == "energy_budget"
    assert s["stop/epoch"] == 3 and s["epochs"] == 3
    assert s["stop/energy_J"] == pytest.approx(13.0)
    assert s["energy/total_J"] == pytest.approx(13.0)
    assert s["energy/total_J"] <= 15.0
    assert s["energy/total_J"] + 4.0 > 15.0  # one more epoch would have crossed it


@pytest.mark.parametrize("diminishing_patience, epochs", [(1, 7), (2, 8)])
def test_diminishing_returns_stops_at_the_expected_epoch(make_cfg, diminishing_patience, epochs):
    # window 2 = 8 J = 0.008 kJ; floor 5 per kJ -> a gain below 0.04 over two epochs is too little.
    # gains over the window: epoch 2: 0.20, 3: 0.15, 4: 0.08, 5: 0.05, 6: 0.03 (below), 7: 0.015 (below)
    values = [0.50, 0.60, 0.70, 0.75, 0.78, 0.80, 0.81, 0.815, 0.818, 0.82]
    s = _run(
        make_cfg,
        "trainer.max_epochs=10",
        "callbacks.early_stop.window=2",
        "callbacks.early_stop.min_gain_fraction=null",
        "callbacks.early_stop.min_gain_per_kJ=5.0",
        f"callbacks.early_stop.diminishing_patience={diminishing_patience}",
        values=values,
    )
    assert s["stop/reason"] == "diminishing_returns"
    assert s["stop/epoch"] == epochs == s["epochs"]
    assert s["stop/energy_J"] == pytest.approx(1.0 + 4.0 * epochs)
    assert s["energy/total_J"] == pytest.approx(1.0 + 4.0 * epochs)


def test_target_reached(make_cfg):
    s = _run(
        make_cfg,
        "trainer.max_epochs=10",
        "callbacks.early_stop.target=0.75",
        values=[0.50, 0.60, 0.70, 0.75, 0.80, 0.85],
    )
    assert s["stop/reason"] == "target_reached"
    assert s["stop/epoch"] == 4 and s["epochs"] == 4


def test_no_rule_fired_reports_max_epochs(make_cfg):
    s = _run(make_cfg, "trainer.max_epochs=3", values=[0.5, 0.6, 0.7])
    assert s["stop/reason"] == "max_epochs"
    assert s["stop/epoch"] == 3
    assert s["stop/energy_J"] == pytest.approx(13.0)
    assert s["energy/total_J"] == pytest.approx(13.0)


def test_patience_stops_and_the_best_checkpoint_is_tested(make_cfg):
    TESTED.clear()
    s = _run(
        make_cfg,
        "trainer.max_epochs=10",
        "callbacks.early_stop.min_gain_fraction=null",
        "callbacks.early_stop.patience=2",
        values=[0.50, 0.70, 0.90, 0.80, 0.85, 0.95],
    )
    assert s["stop/reason"] == "patience"
    assert s["stop/epoch"] == 5  # best at epoch index 2, then two validations without improvement
    assert len(TESTED) == 1
    tested = TESTED[0]
    assert tested["ckpt_path"] == tested["best"]
    assert Path(tested["best"]).name == "epoch002.ckpt"  # val/acc 0.90, not the last epoch
    assert tested["ckpt_path"] != tested["last"]
    # the energy figures are the whole fit's, not the best epoch's (the test pass restored that checkpoint)
    assert s["energy/total_J"] == pytest.approx(1.0 + 4.0 * 5)


@pytest.mark.slow
def test_resume_counts_the_energy_already_spent(make_cfg, tmp_path):
    first = _run(make_cfg, "trainer.max_epochs=2", values=[0.5, 0.6])
    assert first["stop/reason"] == "max_epochs" and first["energy/total_J"] == pytest.approx(9.0)
    last = tmp_path / "first.ckpt"  # a copy: the resumed runs write their own last.ckpt into the same dir
    shutil.copy(tmp_path / "run" / "checkpoints" / "last.ckpt", last)
    saved = torch.load(last, weights_only=False)["callbacks"]
    state = saved["wattwise.early_stop"]  # the contract's stable state_key
    # saved at the 2nd epoch's validation end: the 2nd epoch is in the history already
    assert [r["epoch"] for r in state["history"]] == [0, 1]
    assert [r["metric"] for r in state["history"]] == pytest.approx([0.5, 0.6])
    assert [r["spent_J"] for r in state["history"]] == pytest.approx([5.0, 9.0])

    # Budget 16 J. The resumed run starts at 9 J + 1 J (its own sanity check) = 10 J: one more epoch
    # (14 J) fits, a second (18 J) would not. A fresh count (from 0 J) would have allowed 3 more epochs.
    resumed = _run(
        make_cfg,
        "trainer.max_epochs=10",
        "callbacks.early_stop.budget_J=16",
        f"ckpt_path={last}",
        values=[0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    )
    assert resumed["stop/reason"] == "energy_budget"
    assert resumed["stop/epoch"] == 3 and resumed["epochs"] == 3
    assert resumed["energy/total_J"] == pytest.approx(14.0)

    # Budget 12 J: 10 J spent + a 4 J epoch is already too much, so it stops before training at all.
    again = _run(
        make_cfg,
        "trainer.max_epochs=10",
        "callbacks.early_stop.budget_J=12",
        f"ckpt_path={last}",
        "test=false",  # the best checkpoint the copy points at was replaced by the run above
        values=[0.5, 0.6, 0.7],
    )
    assert again["stop/reason"] == "energy_budget"
    assert again["stop/epoch"] == 2 and again["epochs"] == 2
    assert again["energy/total_J"] == pytest.approx(10.0)


def test_a_rule_that_fires_on_the_last_epoch_is_reported_as_max_epochs(make_cfg):
    """Diminishing returns fire at epoch 7 (see above); with max_epochs=7 the fit ends there anyway."""
    values = [0.50, 0.60, 0.70, 0.75, 0.78, 0.80, 0.81, 0.815]
    s = _run(
        make_cfg,
        "trainer.max_epochs=7",
        "callbacks.early_stop.window=2",
        "callbacks.early_stop.min_gain_fraction=null",
        "callbacks.early_stop.min_gain_per_kJ=5.0",
        "callbacks.early_stop.diminishing_patience=1",
        values=values,
    )
    assert s["stop/reason"] == "max_epochs" and s["stop/epoch"] == 7


def test_after_a_structure_change_patience_judges_the_new_net_only():
    es = EarlyStop(patience=2, min_gain_fraction=None)
    es.history = [EpochRecord(e, m, 1.0, float(e + 1)) for e, m in enumerate([0.80, 0.90])]
    es.on_structure_change(None, None, StructureChange(source="prune", epoch=2))
    es.history += [EpochRecord(2, 0.50, 1.0, 3.0), EpochRecord(3, 0.60, 1.0, 4.0)]
    assert es._evaluate(4.0) == []  # the pruned net improves: 0.50 -> 0.60
    es.since = 0  # judged against the wider net's 0.90, patience would have fired
    assert es._evaluate(4.0) == ["patience"]
    assert es.state_dict()["since"] == 0


def test_prune_then_early_stop_restart_patience_through_the_announcement(make_cfg):
    """+optim=[prune,early_stop]: our early stopping hears of each prune (no callback resets another)."""
    s = _run(
        make_cfg,
        "model=cnn",
        "trainer.max_epochs=4",
        "callbacks.prune.start_epoch=1",
        "callbacks.prune.end_epoch=2",
        "callbacks.early_stop.patience=1",
        "callbacks.early_stop.min_gain_fraction=null",
        values=[0.9, 0.5, 0.6, 0.7],  # each prune costs accuracy; the pruned net then improves
        optim="[early_stop,prune]",
    )
    assert s["stop/reason"] == "max_epochs" and s["epochs"] == 4
