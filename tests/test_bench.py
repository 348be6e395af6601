"""The standard energy benchmark: the quick variant runs end to end and writes its table (no timings)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import ROOT


def _load_bench():
    spec = importlib.util.spec_from_file_location("energy_bench", ROOT / "bench" / "energy_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_are_discovered_from_conf():
    bench = _load_bench()
    options = bench.discover_options()
    on_disk = {p.stem for p in (ROOT / "conf" / "optim").glob("*.yaml")}
    assert set(options) == on_disk and "amp" in options
    assert options[-1] == "green"  # the combination comes after the options it combines


def test_ratios_are_paired_per_round():
    bench = _load_bench()
    records = [
        # round 0: the machine is fast; round 1: twice as slow. The variant is 0.5x its baseline in both.
        {"workload": "w", "variant": "baseline", "round": 0, "status": "completed", "energy/total_J": 10.0,
         "time/train_s": 1.0, "test/acc": 0.90, "energy/J_per_sample": 0.01, "energy/source": "estimate"},
        {"workload": "w", "variant": "x", "round": 0, "status": "completed", "energy/total_J": 5.0,
         "time/train_s": 0.5, "test/acc": 0.89, "energy/J_per_sample": 0.005, "energy/source": "estimate"},
        {"workload": "w", "variant": "baseline", "round": 1, "status": "completed", "energy/total_J": 20.0,
         "time/train_s": 2.0, "test/acc": 0.90, "energy/J_per_sample": 0.02, "energy/source": "estimate"},
        {"workload": "w", "variant": "x", "round": 1, "status": "completed", "energy/total_J": 10.0,
         "time/train_s": 1.0, "test/acc": 0.89, "energy/J_per_sample": 0.01, "energy/source": "estimate"},
        {"workload": "w", "variant": "broken", "round": 0, "status": "failed", "error": "ValueError: bad"},
    ]  # fmt: skip
    rows = {r["variant"]: r for r in bench.summarise(records, ["baseline", "x", "broken"])}
    assert rows["x"]["energy_x"] == pytest.approx(0.5)  # ratio of medians would say 7.5/15 too, but
    assert rows["x"]["time_x"] == pytest.approx(0.5)  # pairing is what survives a drifting machine
    assert rows["x"]["acc_delta_pt"] == pytest.approx(-1.0)
    assert rows["baseline"]["energy_x"] == pytest.approx(1.0)
    assert rows["broken"]["runs"] == "0/1" and "bad" in rows["broken"]["error"]
    table = bench.markdown_table(list(rows.values()))
    assert "failed: ValueError: bad" in table


def test_energy_figures_cover_the_whole_fit_when_the_best_checkpoint_is_early(make_cfg):
    """The bench compares summary.json totals: testing the best checkpoint must not roll them back."""
    from wattwise.train import train

    cfg = make_cfg(
        "trainer.max_epochs=3",
        "energy=estimate",
        "callbacks.model_checkpoint.monitor=epoch",  # best = the first epoch, always
        "callbacks.model_checkpoint.mode=min",
    )
    train(cfg)
    s = json.loads((ROOT / cfg.paths.output_dir / "summary.json").read_text())
    assert s["epochs"] == 3 and s["status"] == "completed"
    samples = s["energy/total_J"] / s["energy/J_per_sample"]
    assert samples == pytest.approx(3 * 3 * 64)  # 3 epochs x 3 batches x 64, not the first epoch's 192


@pytest.mark.slow
def test_quick_bench_writes_its_table(tmp_path):
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "energy_bench.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    assert text in proc.stdout  # the same table is printed
    assert "energy source: estimate (an ESTIMATE, not a measurement)" in text
    header = next(line for line in text.splitlines() if line.startswith("| workload"))
    for column in (
        "energy J",
        "mJ/sample",
        "time s",
        "test acc %",
        "energy x",
        "time x",
        "Δacc pt",
        "energy source",
    ):
        assert column in header
    bench = _load_bench()
    variants = ["baseline", *bench.discover_options()]
    rows = [line for line in text.splitlines() if line.startswith("| digits")]
    assert len(rows) == 2 * len(variants)
    for workload in ("digits+mlp", "digits+cnn"):
        for variant in variants:
            row = next(r for r in rows if r.startswith(f"| {workload} | {variant} |"))
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[2] == "1/1", row  # the run completed
            assert float(cells[3]) > 0 and cells[-1] == "estimate"
    raw = json.loads(out.with_suffix(".json").read_text())
    assert len(raw["runs"]) == 2 * len(variants)
