"""`python -m wattwise.compare`: table, CSV and Pareto plot from hand-made summaries (no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from wattwise.compare import CompareError, compare, load_runs, main, pareto_mask

COMMON = ["trainer.max_epochs=3", "energy=estimate"]


def _write(root: Path, name: str, status: str = "completed", source: str = "estimate", **fields) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    summary = {
        "status": status,
        "run_dir": str(run_dir),
        "optim": fields.pop("optim", []),
        "overrides": [*COMMON, *fields.pop("overrides", [])],
        "energy/source": source,
        "energy_source": source,
        **fields,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def _point(acc: float, energy: float, **more) -> dict:
    return {
        "test/acc": acc,
        "energy/total_J": energy,
        "energy/J_per_sample": energy / 1000,
        "time/train_s": energy / 10,
        **more,
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Seven runs with a known front: a, b, e and g (g ties a exactly); f failed."""
    root = tmp_path / "sweep"
    _write(root, "a", overrides=["model=mlp"], **_point(0.90, 10.0))
    _write(root, "b", optim=["amp"], overrides=["optim=[amp]", "model=mlp"], **_point(0.95, 20.0))
    _write(root, "c", overrides=["model=cnn"], **_point(0.93, 25.0))  # beaten by b
    _write(root, "d", overrides=["model=cnn", "seed=2"], **_point(0.90, 12.0))  # beaten by a
    _write(root, "e", optim=["amp", "prune"], overrides=["optim=[amp,prune]"], **_point(0.97, 40.0))
    _write(
        root,
        "f",
        status="failed",
        overrides=["model=cnn", "seed=3"],
        error="RuntimeError: out of memory",
        **{"energy/total_J": 5.0, "test/acc": 0.99, "val/acc": 0.99},  # would lead, but it failed
    )
    _write(root, "g", overrides=["model=mlp", "seed=4"], **_point(0.90, 10.0))
    return root


def test_pareto_mask_on_hand_made_points():
    points = [(0.90, 10.0), (0.95, 20.0), (0.93, 25.0), (0.90, 12.0), (0.97, 40.0), (0.90, 10.0), (0.5, 1.0)]
    assert pareto_mask(points) == [True, True, False, False, True, True, True]
    assert pareto_mask([]) == []
    assert pareto_mask([(0.1, 100.0)]) == [True]
    # higher accuracy for the same energy wins; lower energy for the same accuracy wins
    assert pareto_mask([(0.8, 5.0), (0.9, 5.0)]) == [False, True]
    assert pareto_mask([(0.9, 6.0), (0.9, 5.0)]) == [False, True]


def test_front_status_and_errors_from_summaries(sweep):
    runs = {r.name: r for r in load_runs(sweep)}
    assert sorted(runs) == list("abcdefg")
    assert {n for n, r in runs.items() if r.pareto} == {"a", "b", "e", "g"}
    assert runs["f"].status == "failed" and not runs["f"].pareto
    assert runs["f"].error == "RuntimeError: out of memory"
    assert runs["e"].optim_label == "amp+prune" and runs["a"].optim_label == "none"


def test_table_csv_and_png(sweep, tmp_path):
    out = tmp_path / "report"
    result = compare(sweep, out=out)
    table = result["table"]
    lines = table.splitlines()
    assert lines[0] == "7 runs: 6 completed, 1 failed or interrupted"
    rows = {line.split()[-1]: line for line in lines[3:10]}
    assert set(rows) == set("abcdefg")
    for name in "abeg":
        assert rows[name].startswith("*"), rows[name]
    for name in "cdf":
        assert not rows[name].startswith("*"), rows[name]
    assert "ESTIMATE" in rows["a"] and "90.00 %" in rows["a"] and "10 J" in rows["a"]
    assert "failed" in rows["f"]
    assert "run f [failed] (none): RuntimeError: out of memory" in table
    # the overrides every run shares are not repeated in the table; the ones that differ are
    assert "trainer.max_epochs=3" not in table and "model=cnn seed=2" in rows["d"]
    # rows sorted by energy, failed runs last
    assert [line.split()[-1] for line in lines[3:10]] == ["a", "g", "d", "b", "c", "e", "f"]

    with (out / "compare.csv").open() as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == 7
    by_run = {r["run"]: r for r in records}
    assert {n for n, r in by_run.items() if r["pareto"] == "1"} == {"a", "b", "e", "g"}
    assert float(by_run["b"]["test/acc"]) == 0.95 and float(by_run["b"]["energy/total_J"]) == 20.0
    assert by_run["b"]["optim"] == "amp" and "optim=[amp]" in by_run["b"]["overrides"]
    assert by_run["f"]["status"] == "failed" and by_run["f"]["error"] == "RuntimeError: out of memory"
    assert by_run["f"]["val/acc"] == "0.99"  # every metric of every summary is kept
    assert by_run["a"]["energy_source"] == "estimate"

    png = out / "compare.png"
    assert result["png"] == png
    from PIL import Image

    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] >= 600 and img.size[1] >= 400
    assert png.stat().st_size < 200_000


def test_mixed_energy_sources_are_marked_and_fronts_kept_apart(tmp_path):
    root = tmp_path / "mixed"
    _write(root, "est_a", **_point(0.90, 10.0))
    _write(root, "est_b", **_point(0.85, 30.0))  # beaten by est_a
    # a measured run that would beat every estimate if the two were (wrongly) compared
    _write(root, "gpu_a", source="zeus-nvml", **_point(0.95, 1.0))
    _write(root, "gpu_b", source="zeus-nvml", **_point(0.80, 2.0))
    result = compare(root, make_plot=False)
    runs = {r.name: r for r in result["runs"]}
    assert {n for n, r in runs.items() if r.pareto} == {"est_a", "gpu_a"}
    assert "energy comes from different sources (estimate: 2, zeus-nvml: 2)" in result["table"]
    assert "measured (zeus-nvml)" in result["table"] and "ESTIMATE" in result["table"]
    assert result["png"] is None


def test_parallel_jobs_are_marked_shared(tmp_path):
    root = tmp_path / "joblib"
    _write(root, "0", launcher={"launcher": "joblib", "parallel_jobs": 2}, **_point(0.9, 10.0))
    _write(root, "1", launcher={"launcher": "joblib", "parallel_jobs": 2}, **_point(0.8, 12.0))
    table = compare(root, make_plot=False)["table"]
    assert "10 J shared" in table and "ran in parallel on one machine" in table


def test_job_dir_without_summary_is_listed_as_failed(sweep):
    job = sweep / "h"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- data.batch_size=0\n- optim=[amp]\n")
    runs = {r.name: r for r in load_runs(sweep)}
    assert runs["h"].status == "no summary" and runs["h"].optim == ["amp"]
    assert "stopped before training" in runs["h"].error and not runs["h"].pareto
    assert "run h [no summary] (amp)" in compare(sweep, make_plot=False)["table"]


def test_nested_sessions_are_read(tmp_path):
    """An Optuna study keeps one folder per session: summaries at depth two are found."""
    root = tmp_path / "study"
    _write(root / "2026-11-26_10-00-00_000001", "0", **_point(0.9, 10.0))
    _write(root / "2026-11-26_11-00-00_000002", "0", **_point(0.95, 9.0))
    runs = load_runs(root)
    assert sorted(r.name for r in runs) == ["2026-11-26_10-00-00_000001/0", "2026-11-26_11-00-00_000002/0"]
    assert [r.pareto for r in sorted(runs, key=lambda r: r.name)] == [False, True]


def test_other_metrics_can_be_compared(sweep):
    runs = {r.name: r for r in load_runs(sweep, metric="val/acc")}
    assert runs["f"].accuracy == 0.99 and runs["a"].accuracy is None
    assert not any(r.pareto for r in runs.values())  # only the failed run has val/acc here


def test_cli_writes_files_and_errors_in_one_line(sweep, tmp_path, capsys):
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and (sweep / "compare.csv").is_file() and (sweep / "compare.png").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wattwise.compare: error: no summary.json under") and err.count("\n") == 1
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(CompareError):
        load_runs(empty)
