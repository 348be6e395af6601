"""The distillation benchmark: its break-even and summary on hand-made runs; the quick run end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT, load_bench_module

bench = load_bench_module("distill_bench")


def test_break_even_is_the_one_off_over_the_saving_to_target():
    assert bench.break_even(1000.0, 300.0, 200.0) == pytest.approx(10.0)
    assert math.isinf(bench.break_even(1000.0, 300.0, 300.0))  # no saving: never pays
    assert math.isinf(bench.break_even(1000.0, 300.0, None))  # the distilled run missed the target
    assert bench.break_even(1000.0, None, 200.0) is None  # scratch never got there: n.a.


def test_the_cached_pair_stays_in_order_while_variants_rotate():
    orders = [bench.order(seed) for seed in range(3)]
    assert {o[0] for o in orders} == {"scratch", "distill", "cached_build"}
    for o in orders:
        assert sorted(o) == sorted(bench.VARIANTS) and o.index("cached") == o.index("cached_build") + 1


def test_summary_counts_the_cache_in_the_cached_break_even():
    def run(variant, seed, ett, **extra):
        return {"task": "t", "variant": variant, "seed": seed, "status": "completed", "ett_J": ett,
                "test/acc": 0.9, "energy/total_J": ett or 500.0, **extra}  # fmt: skip

    records = []
    for seed in (0, 1):
        records += [
            run("teacher", seed, None, **{"energy/total_J": 1000.0}),
            run("scratch", seed, 300.0),
            run("distill", seed, 400.0, **{"distill/teacher_J": 150.0}),
            run("cached_build", seed, 320.0, **{"distill/cache_build_J": 100.0}),
            run("cached", seed, 200.0, **{"distill/cache_build_J": 100.0}),
        ]
    rows = {r["variant"]: r for r in bench.summarise(records)}
    assert rows["cached"]["break_even"].value == pytest.approx((1000.0 + 100.0) / 100.0)
    assert math.isinf(rows["distill"]["break_even"].value) and rows["distill"]["never"] == 2
    assert rows["cached"]["ett_x"].value == pytest.approx(200.0 / 300.0)
    table = bench.markdown_table(bench.summarise(records))
    assert "| t | cached |" in table and "never: 2" in table


@pytest.mark.slow
def test_quick_mode_runs_end_to_end(tmp_path):
    """One task here (each task is the same code path); the lead's `--quick` runs both."""
    out = tmp_path / "report.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "distill_bench.py"), "--quick", "--tasks", "tabular+mlp"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT / "src"), "MPLCONFIGDIR": "/tmp/wattwise-mpl", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert len(runs) == 1 + len(bench.VARIANTS) and all(r["status"] == "completed" for r in runs)
    cached = [r for r in runs if r["variant"] == "cached"]
    assert all(r["distill/teacher_forwards"] == 0 and r["distill/cached"] for r in cached)
    assert "an ESTIMATE" in out.read_text()
