"""`compare` ranks by the runs' own monitored metric: a regression sweep (val/loss, mode min) from
hand-made summaries is grouped, ranked and drawn lowest-loss-for-fewest-joules; mixed monitors fail in
one line; an explicit --metric / --mode still wins; classification sweeps read as they always did."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from test_compare import _job, _write

from wattwise.compare import CompareError, compare, main
from wattwise.compare.metric import Metric, choose_metric, is_accuracy, value_columns

REGRESSION = {"monitor": "val/loss", "mode": "min"}
CLASSIFIER = {"monitor": "val/acc", "mode": "max"}
# per variant: (median loss, energy as a multiple of its seed's baseline)
LOSSES = {"none": (0.20, 1.0), "amp": (0.25, 0.5), "prune": (0.18, 1.05), "qat": (0.30, 1.5)}


def _regression_job(root: Path, num: int, optim: list[str], seed: int, energy: float, loss: float, **more):
    """A regression job: no accuracy, the loss monitored (min), its test counterpart logged."""
    fields = {"val/loss": loss + 0.01, "test/loss": loss, "test/mae": loss / 2, **REGRESSION, **more}
    value = "[" + ",".join(optim) + "]"
    overrides = [f"optim={value}", f"seed={seed}", f"sweep.variant='{'+'.join(optim) or 'none'}'"]
    point = {"energy/total_J": energy, "energy/J_per_sample": energy / 1000, "time/train_s": energy / 10}
    _write(root, str(num), optim=optim, overrides=overrides, seed=seed, **point, **fields)


@pytest.fixture
def regression(tmp_path: Path) -> Path:
    """3 seeds x 4 variants; qat has the highest loss (best if ranked by max), prune the lowest."""
    root = tmp_path / "regression"
    base = {0: 10.0, 1: 20.0, 2: 40.0}
    num = 0
    for seed in (0, 1, 2):
        for name, (loss, factor) in LOSSES.items():
            optim = [] if name == "none" else [name]
            _regression_job(root, num, optim, seed, factor * base[seed], loss + 0.001 * (seed - 1))
            num += 1
    return root


def test_auto_picks_the_monitors_test_counterpart_and_its_mode(regression):
    result = compare(regression, make_plot=False)
    assert result["metric"] == Metric("test/loss", "min", "the runs monitored val/loss (min)")
    variants = {v.label: v for v in result["variants"]}
    assert variants["prune"].value == pytest.approx(0.18) and variants["none"].energy_J == 20.0
    assert variants["amp"].verdict == "lower" and variants["none"].verdict == "baseline"
    # lowest loss for the fewest joules: amp (cheapest), none, prune (lowest loss); qat is beaten by none
    assert {k for k, v in variants.items() if v.pareto} == {"amp", "none", "prune"}
    by_run = {r.name: r for r in result["runs"]}
    assert not any(r.pareto for r in by_run.values() if r.optim == ["qat"])
    assert by_run["2"].value == pytest.approx(0.179)  # prune, seed 0


def test_regression_table_labels_the_metric_and_shows_plain_numbers(regression, tmp_path):
    result = compare(regression, out=tmp_path / "out", make_plot=False)
    table, runs_table = result["table"], result["runs_table"]
    header = table.splitlines()[1]
    assert "test/loss (median)" in header and "accuracy" not in header and "test/acc" not in table
    rows = {
        line.split()[1] if line.startswith("*") else line.split()[0]: line for line in table.splitlines()[3:7]
    }
    assert "0.18 " in rows["prune"] and " %" not in table  # plain numbers (the 95% interval stays)
    assert rows["prune"].startswith("*") and not rows["qat"].startswith("*")
    assert "no other variant has a lower median test/loss" in table
    assert "no other compared run has a lower test/loss" in runs_table
    with result["variants_csv"].open() as fh:
        records = {r["variant"]: r for r in csv.DictReader(fh)}
    assert float(records["prune"]["median_test_loss"]) == pytest.approx(0.18)
    assert "median_accuracy" not in records["prune"] and records["qat"]["pareto"] == "0"
    with result["csv"].open() as fh:
        assert float(next(csv.DictReader(fh))["test/loss"]) > 0  # the per-run CSV names it too


def test_regression_plot_draws_the_front_of_lowest_loss(regression, tmp_path, monkeypatch):
    import matplotlib.figure

    drawn = []
    saved = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):  # noqa: ANN001, ANN202 - the figure, to read its axes back
        drawn.append(fig)
        return saved(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    result = compare(regression, out=tmp_path / "out")
    (ax,) = drawn[0].axes
    assert ax.get_ylabel() == "test/loss, median (lower is better)" and "test/loss" in ax.get_title()
    (front,) = [line for line in ax.get_lines() if line.get_label().startswith("Pareto front")]
    want = sorted((v.energy_J, v.value) for v in result["variants"] if v.pareto)
    assert list(front.get_xdata()) == pytest.approx([e for e, _ in want])
    assert list(front.get_ydata()) == pytest.approx([y for _, y in want])
    assert [y for _, y in want] == pytest.approx([0.25, 0.20, 0.18])  # falls with energy: lower is better


def test_mixed_monitors_fail_in_one_line(regression, capsys):
    _job(regression, 99, [], 0, 5.0, 0.9, **CLASSIFIER)
    with pytest.raises(CompareError, match=r"val/acc \(max\): 99; val/loss \(min\): 0, 1, 10 \+9 more"):
        compare(regression, make_plot=False)
    assert main([str(regression), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("wattwise.compare: error: the runs monitored different metrics")
        and err.count("\n") == 1
    )
    # both given: the user has chosen, the runs are ranked by it
    result = compare(regression, metric="energy/J_per_sample", mode="min", make_plot=False)
    assert result["metric"].name == "energy/J_per_sample"


def test_explicit_metric_and_mode_still_work(regression, capsys):
    result = compare(regression, metric="val/loss", make_plot=False)
    assert (result["metric"].name, result["metric"].mode) == ("val/loss", "min")
    assert {v.label: v.value for v in result["variants"]}["prune"] == pytest.approx(0.19)
    assert compare(regression, metric="test/mae", make_plot=False)["metric"].mode == "min"  # from its name
    flipped = compare(regression, metric="test/loss", mode="max", make_plot=False)
    assert {v.label for v in flipped["variants"] if v.pareto} == {"amp", "qat"}  # highest loss, fewest J
    assert main([str(regression), "--metric", "val/loss", "--mode", "min", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert (
        "val/loss (median)" in out and "metric: val/loss, lower is better (set by --metric and --mode)" in out
    )
    assert main([str(regression), "--no-plot"]) == 0
    assert "metric: test/loss, lower is better (the runs monitored val/loss (min))" in capsys.readouterr().out
    with pytest.raises(CompareError, match="cannot tell whether time/train_s should rise or fall"):
        compare(regression, metric="time/train_s", make_plot=False)


def test_without_a_test_counterpart_the_monitor_itself(tmp_path):
    root = tmp_path / "no_test"
    for num, loss in enumerate((0.3, 0.2)):
        _write(root, str(num), **{"val/loss": loss, "energy/total_J": 10.0 + num, **REGRESSION})
    result = compare(root, make_plot=False)
    assert result["metric"].name == "val/loss" and [r.pareto for r in result["runs"]] == [True, True]


def test_classification_summaries_with_a_monitor_read_as_before(tmp_path, capsys):
    """The default classifier's summaries now record val/acc (max): the table is the one without it."""
    old, new = tmp_path / "old", tmp_path / "new"
    for root, extra in ((old, {}), (new, CLASSIFIER)):
        for seed in range(3):
            _job(root, 2 * seed, [], seed, 10.0 + seed, 0.90, **extra)
            _job(root, 2 * seed + 1, ["amp"], seed, 6.0 + seed, 0.89, **extra)
    a, b = compare(old, make_plot=False), compare(new, make_plot=False)
    assert a["metric"].name == b["metric"].name == "test/acc" and b["metric"].mode == "max"
    assert a["table"] == b["table"] and "90.00 %" in b["table"]
    assert a["runs_table"].replace(str(old), "") == b["runs_table"].replace(str(new), "")
    assert main([str(old), "--no-plot"]) == main([str(new), "--no-plot"]) == 0
    first, second = capsys.readouterr().out.split("compare_variants.csv\n")[:2]
    assert first.replace(str(old), "") == second.replace(str(new), "") and "metric:" not in first


def test_metric_names():
    assert is_accuracy("test/acc") and is_accuracy("val/top5_acc") and is_accuracy("test/accuracy")
    assert not is_accuracy("test/loss") and not is_accuracy("val/accel_error")
    assert value_columns("test/acc") == ("accuracy", "median_accuracy")
    assert value_columns("test/loss") == ("test/loss", "median_test_loss")
    assert choose_metric([("0", {"monitor": "auto", "mode": "auto", "test/acc": 0.9})]).name == "test/acc"
    with pytest.raises(CompareError, match="--mode must be"):
        choose_metric([], mode="lowest")
