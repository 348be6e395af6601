"""W&B: offline without a key or a network (one warning, no hang), metrics read back from the offline run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from wandb_offline import find_run_files, read_run

from wattwise.train import train
from wattwise.utils.wandb_logger import choose_mode


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))


def test_no_key_means_offline_with_one_warning(no_wandb_env, caplog):
    with caplog.at_level(logging.WARNING):
        assert choose_mode() == "offline"
    assert sum("no API key" in r.getMessage() for r in caplog.records) == 1


def test_key_but_no_network_goes_offline_fast(no_wandb_env, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    import socket

    probes = []
    real_connect = socket.create_connection

    def recording_connect(address, timeout=None, *args, **kwargs):
        probes.append((address, timeout))
        return real_connect(address, timeout, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", recording_connect)
    with caplog.at_level(logging.WARNING):
        assert choose_mode() == "offline"
    # one bounded probe of the configured host, instead of W&B's own ~90 s wait before CommError
    assert probes == [(("127.0.0.1", 9), 3.0)]
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_explicit_mode_is_respected(no_wandb_env, monkeypatch):
    assert choose_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert choose_mode() == "offline"


def test_offline_run_holds_the_energy_metrics(no_wandb_env, make_cfg):
    cfg = make_cfg("logger=many", "trainer.max_epochs=2")
    train(cfg)
    files = find_run_files(Path(cfg.paths.output_dir))
    assert len(files) == 1
    run = read_run(files[0])
    assert run["exited"]
    energy_rows = [row for row in run["history"] if "energy/total_J" in row]
    assert len(energy_rows) >= 2  # one per epoch, then the final figures
    assert run["summary"]["energy/source"] == "estimate"
    assert run["summary"]["energy/total_J"] > 0
    assert run["summary"]["test/acc"] >= 0
    assert run["config"]["data"]["batch_size"] == 64  # the resolved config
    # nothing lost: the CSV logger and the summary hold the same figures
    assert "energy/total_J" in (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text()


@pytest.mark.slow
def test_sweep_runs_share_a_group_and_are_named_by_overrides(tmp_path):
    proc = run_cli(
        [
            "-m",
            "logger=wandb",
            "model=mlp,cnn",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=ROOT,
        env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [read_run(f) for f in find_run_files(tmp_path / "sweep")]
    assert len(runs) == 2
    groups = {r["run"]["group"] for r in runs}
    assert len(groups) == 1 and groups.pop()
    names = sorted(r["run"]["name"] for r in runs)
    assert "model=cnn" in names[0] and "model=mlp" in names[1] and "logger=wandb" in names[0]


def test_compare_table_on_wandb_matches_compare(no_wandb_env, tmp_path, monkeypatch):
    """The W&B table (offline, read back from the run's files) holds compare's figures, row for row."""
    import json

    from test_compare import _job, _skipped

    from wattwise.compare import compare, variant_rows
    from wattwise.compare.wandb_table import TABLE_COLUMNS, log_variant_table, sweep_group

    monkeypatch.setenv("WANDB_MODE", "offline")
    root = tmp_path / "sweep"
    energies = {"none": [10.0, 20.0, 40.0], "amp": [5.0, 10.0, 20.0], "prune": [11.0, 18.0, 40.0]}
    num = 0
    for seed in range(3):
        for name, values in energies.items():
            _job(root, num, [] if name == "none" else [name], seed, values[seed])
            num += 1
        _job(root, num, ["power"], seed, 3.0, **_skipped("power", "no GPU (no_gpu)"))
        num += 1
    result = compare(root, make_plot=False)
    log_variant_table(result["variants"], project="wattwise-test", folder=root)

    files = find_run_files(root)
    assert len(files) == 1
    run = read_run(files[0])
    assert run["exited"] and run["run"]["name"] == "compare" and run["run"]["group"] == sweep_group(root)
    table_file = next(files[0].parent.glob("files/media/table/compare/variants_*.table.json"))
    table = json.loads(table_file.read_text())
    assert table["columns"] == list(TABLE_COLUMNS)
    logged = [dict(zip(table["columns"], row)) for row in table["data"]]
    expected = variant_rows(result["variants"])
    assert (
        [r["variant"] for r in logged]
        == [r["variant"] for r in expected]
        == ["none", "amp", "prune", "power"]
    )
    for got, want in zip(logged, expected):
        for column in TABLE_COLUMNS:
            assert got[column] == (
                pytest.approx(want[column]) if isinstance(want[column], float) else want[column]
            )
    by_variant = {r["variant"]: r for r in logged}
    assert by_variant["amp"]["verdict"] == "lower" and by_variant["amp"]["ratio_value"] == pytest.approx(0.5)
    assert by_variant["prune"]["verdict"] == "tie" and by_variant["power"]["verdict"].startswith("skipped (")
    # and each variant's figures in the run's summary, for W&B's run table
    assert run["summary"]["compare/amp/ratio_high"] == pytest.approx(by_variant["amp"]["ratio_high"])
    assert run["summary"]["compare/prune/verdict"] == "tie"
    assert by_variant["prune"]["ratio"] in result["table"]


def test_compare_table_on_wandb_matches_compare_for_a_regression_sweep(no_wandb_env, tmp_path, monkeypatch):
    """A regression sweep (test/loss, min): the W&B table names the metric and holds compare's figures."""
    import json

    from test_compare_metric import _regression_job

    from wattwise.compare import compare, variant_rows
    from wattwise.compare.wandb_table import log_variant_table, table_columns

    monkeypatch.setenv("WANDB_MODE", "offline")
    root = tmp_path / "regression"
    losses = {"none": [0.20, 0.21, 0.19], "amp": [0.26, 0.25, 0.24], "qat": [0.30, 0.31, 0.29]}
    energies = {"none": [10.0, 20.0, 40.0], "amp": [5.0, 10.0, 20.0], "qat": [15.0, 30.0, 60.0]}
    num = 0
    for seed in range(3):
        for name in losses:
            _regression_job(
                root, num, [] if name == "none" else [name], seed, energies[name][seed], losses[name][seed]
            )
            num += 1
    result = compare(root, make_plot=False)
    assert result["metric"].name == "test/loss" and result["metric"].mode == "min"
    log_variant_table(result["variants"], project="wattwise-test", folder=root, metric=result["metric"])

    (file,) = find_run_files(root)
    run = read_run(file)
    table = json.loads(next(file.parent.glob("files/media/table/compare/variants_*.table.json")).read_text())
    assert table["columns"] == list(table_columns("test/loss"))
    assert "median_test_loss" in table["columns"] and "median_accuracy" not in table["columns"]
    logged = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    expected = {r["variant"]: r for r in variant_rows(result["variants"], result["metric"])}
    assert list(logged) == list(expected) == ["none", "amp", "qat"]
    for name, want in expected.items():
        for column in table["columns"]:
            value = want[column]
            assert logged[name][column] == (pytest.approx(value) if isinstance(value, float) else value)
    assert logged["none"]["median_test_loss"] == pytest.approx(0.20) and logged["none"]["test/loss"] == "0.2"
    assert {n for n, r in logged.items() if r["pareto"]} == {"none", "amp"}  # qat: more loss, more joules
    assert logged["amp"]["test/loss"] in result["table"] and "%" not in logged["amp"]["test/loss"]
    assert run["summary"]["compare/qat/median_test_loss"] == pytest.approx(0.30)
