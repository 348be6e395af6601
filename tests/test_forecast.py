"""The run's forecast (energy, time, carbon), the budget stop it drives, and the per-run report files.

The forecast and the budget are checked on scripted energy sequences fed to the real EnergyMonitor's
fields (no training), so every expected number is computed by hand; one short real run checks that
the figures and files reach the run dir.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from wattwise.energy.forecast import EpochCost, crossing_budget, forecast_error_pct, forecast_run
from wattwise.energy.monitor import EnergyMonitor
from wattwise.energy.report_callback import EnergyReport
from wattwise.utils.errors import ConfigError


def test_forecast_after_epoch_one_on_a_scripted_sequence():
    # 2 J of set-up, then a first epoch of 10 J in 2 s (3 s in all so far); 5 epochs; 0.001 g per J
    f = forecast_run([EpochCost(10.0, 2.0)], spent_J=12.0, spent_s=3.0, max_epochs=5, gCO2_per_J=0.001)
    assert (f.epochs, f.bound) == (5, "max_epochs")
    assert f.total_J == pytest.approx(12 + 4 * 10)
    assert f.time_s == pytest.approx(3 + 4 * 2)
    assert f.gCO2e == pytest.approx(0.052)
    # a budget of 35 J allows 1 + floor(23 / 10) = 3 epochs
    g = forecast_run([EpochCost(10.0, 2.0)], 12.0, 3.0, 5, 0.001, {"budget_J": 35.0})
    assert (g.epochs, g.bound, g.total_J) == (3, "budget_J", pytest.approx(32.0))


def test_the_next_epoch_is_the_mean_of_the_recent_window():
    history = [EpochCost(30.0, 9.0), EpochCost(10.0, 2.0), EpochCost(12.0, 2.0), EpochCost(14.0, 2.0)]
    f = forecast_run(history, spent_J=70.0, spent_s=16.0, max_epochs=6, gCO2_per_J=0.0, window=3)
    assert f.next_epoch_J == pytest.approx(12.0)  # the last three
    assert f.total_J == pytest.approx(70 + 2 * 12)
    two = forecast_run(history[:2], spent_J=45.0, spent_s=12.0, max_epochs=6, gCO2_per_J=0.0, window=3)
    assert two.next_epoch_J == pytest.approx(
        10.0
    )  # the warm-up epoch (30 J) is left out once a second exists


def test_forecast_error_is_like_for_like():
    first = forecast_run([EpochCost(10.0, 2.0)], 12.0, 3.0, 5, 0.0)
    trained = [EpochCost(10.0, 2.0), EpochCost(11.0, 2.0), EpochCost(12.0, 2.0)]  # cut at 3 epochs, 35 J
    # re-read for 3 epochs the forecast said 12 + 2 x 10 = 32 J: -8.57 % of the real 35 J
    assert forecast_error_pct(first, trained, 35.0) == pytest.approx(100 * (32 - 35) / 35)


def test_crossing_budget_names_the_first_budget_crossed():
    assert crossing_budget(30.0, 10.0, {"budget_J": 45.0}) is None
    assert crossing_budget(30.0, 10.0, {"budget_J": 45.0, "budget_gCO2e": 39.0}) == "budget_gCO2e"


class ScriptedRun:
    """The monitor's per-epoch figures, scripted: set-up, then epochs of the given joules and seconds."""

    def __init__(self, report: EnergyReport, max_epochs: int, setup_J: float = 2.0, **monitor) -> None:
        self.energy = EnergyMonitor(mode="estimate", **monitor)
        self.energy.total_J, self.energy.time_s = setup_J, 1.0
        self.report = report
        self.logged: dict[str, float] = {}
        self.trainer = SimpleNamespace(
            callbacks=[self.energy, report],
            max_epochs=max_epochs,
            current_epoch=0,
            should_stop=False,
            is_global_zero=True,
            callback_metrics={},
        )
        self.module = SimpleNamespace(log=lambda name, value, **kw: self.logged.__setitem__(name, value))

    def epoch(self, joules: float, seconds: float, acc: float = 0.5, metrics: dict | None = None) -> None:
        self.report.on_train_epoch_start(self.trainer, self.module)
        self.energy.epoch_energies_J.append(joules)
        self.energy.total_J += joules
        self.energy.time_s += seconds
        self.trainer.callback_metrics = {"val/acc": acc} if metrics is None else metrics
        self.report.on_train_epoch_end(self.trainer, self.module)
        self.trainer.current_epoch += 1


def test_the_forecast_reaches_the_progress_bar_and_the_summary():
    run = ScriptedRun(EnergyReport(report_dir=None), max_epochs=5)
    run.epoch(10.0, 2.0)
    assert run.logged["energy/spent_J"] == 12.0 and run.logged["forecast/total_J"] == pytest.approx(52.0)
    for _ in range(4):
        run.epoch(10.0, 2.0)
    s = run.report.summary_figures()
    assert s["forecast/after_epochs"] == 1 and s["forecast/total_J"] == pytest.approx(52.0)
    assert s["forecast/time_s"] == pytest.approx(3 + 4 * 2)
    assert s["forecast/gCO2e"] == pytest.approx(52.0 / 3.6e6 * 475.0)


def test_a_budget_stops_before_the_epoch_the_forecast_says_would_cross_it():
    run = ScriptedRun(EnergyReport(budget_J=35.0, report_dir=None), max_epochs=10)
    run.epoch(10.0, 2.0)  # 12 J spent, next ~10 J -> 22: goes on
    run.epoch(10.0, 2.0)  # 22 J, -> 32: goes on
    assert not run.trainer.should_stop
    run.epoch(10.0, 2.0)  # 32 J, -> 42 > 35: stops before the 4th epoch
    assert run.trainer.should_stop
    reason = run.report.summary_figures()["forecast/stop_reason"]
    assert reason.startswith("budget_J") and "42 J" in reason and "35 J" in reason
    assert run.report.summary_figures()["forecast/epochs"] == 3  # the first forecast already saw it


@pytest.mark.parametrize("max_epochs", [-1, None])  # unlimited: where a budget is the only stop
def test_a_budget_stops_an_unlimited_run_too(max_epochs):
    run = ScriptedRun(EnergyReport(budget_J=35.0, report_dir=None), max_epochs=max_epochs)
    for _ in range(3):
        run.epoch(10.0, 2.0)
    assert run.trainer.should_stop
    assert run.report.summary_figures()["forecast/stop_reason"].startswith("budget_J")


def test_a_carbon_budget_converts_at_the_runs_intensity_and_pue():
    # 1 g at 360 g/kWh and PUE 2: 1 / (360 x 2 / 3.6e6) = 5000 device joules
    report = EnergyReport(budget_gCO2e=1.0, report_dir=None)
    run = ScriptedRun(report, max_epochs=10, setup_J=0.0, grid_gCO2_per_kWh=360.0, pue=2.0)
    run.epoch(2000.0, 1.0)
    assert not run.trainer.should_stop
    run.epoch(2000.0, 1.0)  # 4000 J, next 2000 -> 6000 > 5000
    assert run.trainer.should_stop and "budget_gCO2e" in report.stop_reason


def test_with_early_stop_the_forecast_is_for_its_budget_and_the_stop_is_left_to_it():
    from wattwise.methods.early_stop.callback import EarlyStop

    early_stop = EarlyStop(budget_J=35.0)
    run = ScriptedRun(EnergyReport(report_dir=None), max_epochs=10)
    run.trainer.callbacks.insert(1, early_stop)
    for _ in range(3):
        run.epoch(10.0, 2.0)
    s = run.report.summary_figures()
    assert (s["forecast/epochs"], s["forecast/bound"]) == (3, "early_stop budget")
    assert s["forecast/total_J"] == pytest.approx(32.0)
    assert not run.trainer.should_stop and "forecast/stop_reason" not in s  # early_stop's own rule stops it


def test_no_stop_on_the_last_epoch_and_bad_settings_name_the_key():
    run = ScriptedRun(EnergyReport(budget_J=15.0, report_dir=None), max_epochs=1)
    run.epoch(10.0, 2.0)
    assert not run.trainer.should_stop  # max_epochs ends the fit anyway: not called a budget stop
    with pytest.raises(ConfigError, match=r"callbacks\.energy_report\.budget_J"):
        EnergyReport(budget_J=0)
    with pytest.raises(ConfigError, match=r"callbacks\.energy_report\.window"):
        EnergyReport(window=0)


def test_a_run_writes_the_forecast_plot_and_model_card(make_cfg, monkeypatch):
    from wattwise.train import train

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    cfg = make_cfg(
        "trainer.max_epochs=3",
        "energy=estimate",
        "energy.region=SE",
        "energy.pue=1.1",
        "callbacks.energy_report.plot=true",
    )
    train(cfg)
    run_dir = cfg.paths.output_dir
    s = json.loads(open(f"{run_dir}/summary.json").read())
    assert s["forecast/after_epochs"] == 1 and s["forecast/epochs"] == 3
    assert s["forecast/error_pct"] is not None
    assert s["carbon/intensity_gCO2_per_kWh"] == 40.7 and s["energy/pue"] == 1.1
    png = open(s["report/plot"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    card = open(s["report/model_card"]).read()
    assert card.startswith("---\nco2_eq_emissions:\n")
    assert f"emissions: {s['carbon/gCO2e']:.6g}" in card and '"Sweden"' in card and "ESTIMATE" in card


def test_the_energy_plot_labels_the_monitored_metric(tmp_path, monkeypatch):
    """A loss is drawn as is and labelled by its name; val/acc stays `validation accuracy, %`."""
    import matplotlib.figure

    from wattwise.utils.energy_plot import plot_accuracy_vs_energy

    drawn = []
    saved = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):  # noqa: ANN001, ANN202 - the figure, to read its axes back
        drawn.append(fig)
        return saved(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    for metric, values, label, scale in (
        ("val/loss", [0.5, 0.3], "val/loss", 1.0),
        ("val/acc", [0.5, 0.7], "validation accuracy, %", 100.0),
        ("val/top5_acc", [0.5, 0.7], "val/top5_acc, %", 100.0),
    ):
        plot_accuracy_vs_energy([10.0, 20.0], values, 0.0, tmp_path / "p.png", "t", "ESTIMATE", metric=metric)
        ax = drawn[-1].axes[0]
        assert ax.get_ylabel() == label
        assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([scale * v for v in values])
        assert ax.texts[-1].get_text() == (f"{scale * values[-1]:.1f} %" if scale > 1 else "0.3")


def test_an_auto_report_plots_the_loss_of_a_module_without_accuracy():
    """In a plain Trainer the report's monitor is `auto`: val/acc where logged, else val/loss."""
    run = ScriptedRun(EnergyReport(report_dir=None), max_epochs=3)
    run.epoch(10.0, 2.0, metrics={"val/loss": 0.9, "val/mae": 0.5})
    run.epoch(10.0, 2.0, metrics={"val/loss": 0.4, "val/mae": 0.3})
    assert run.report.monitor == "val/loss" and run.report.metric == [0.9, 0.4]
    resumed = EnergyReport(report_dir=None)
    resumed.load_state_dict(run.report.state_dict())
    assert resumed.monitor == "val/loss"  # the saved run's choice
    classifier = ScriptedRun(EnergyReport(report_dir=None), max_epochs=3)
    classifier.epoch(10.0, 2.0, acc=0.7)
    assert classifier.report.monitor == "val/acc" and classifier.report.metric == [0.7]
    neither = ScriptedRun(EnergyReport(report_dir=None), max_epochs=3)
    neither.epoch(10.0, 2.0, metrics={"val/mae": 0.5})
    assert neither.report.monitor == "auto" and neither.report.metric == [None]  # never fails the run
