"""A non-editable install finds its configs: `pip install .` then `wattwise-train` from another folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_a_non_editable_install_trains_from_any_directory(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ in it
    source.mkdir()
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    build = subprocess.run(
        [*pip, "--target", str(target), str(source)], capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "wattwise" / "conf" / "train.yaml").is_file()  # the configs ship in the package
    assert (target / "wattwise" / "energy" / "data" / "grid_intensity.csv").is_file()  # and the carbon tables
    # hydra/sweeper=compare: Hydra finds sweepers only in the hydra_plugins namespace
    assert (target / "hydra_plugins" / "wattwise_compare_sweeper" / "compare_sweeper.py").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    probe = "import wattwise, sys; sys.stdout.write(wattwise.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert where.stdout.startswith(str(target)), where.stdout  # the installed copy, not this checkout
    run = subprocess.run(
        [str(target / "bin" / "wattwise-train"), "trainer.max_epochs=1", "++trainer.limit_train_batches=2",
         "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=1", "hydra.run.dir=run",
         "energy.region=eu-west-1"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((elsewhere / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test/acc"] is not None
    assert summary["carbon/intensity_source"].startswith("table:") and summary["carbon/zone"] == "IE"
