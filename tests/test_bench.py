"""The standard energy benchmark: variants, pairing, per-epoch records, verdicts, the quick run end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT, load_bench_module

bench = load_bench_module("energy_bench")


def test_variants_are_baseline_lightning_each_method_and_the_recipes():
    variants = bench.default_variants()
    methods, recipes = bench.discover_methods()
    assert variants[:2] == ["baseline", "lightning"] and variants[-len(recipes) :] == recipes
    assert "green" in recipes and "green" not in methods and "amp" in methods
    on_disk = {p.stem for p in (ROOT / "src" / "wattwise" / "conf" / "optim").glob("*.yaml")}
    assert set(methods) <= on_disk


@pytest.mark.parametrize(("bf16", "precision"), [(True, "bf16-mixed"), (False, "32-true")])
def test_the_lightning_variant_uses_bf16_only_where_the_hardware_has_it(monkeypatch, bf16, precision):
    monkeypatch.setattr(bench, "native_bf16", lambda: bf16)
    overrides = bench.variant_overrides("lightning")
    assert f"trainer.precision={precision}" in overrides and "optim=[]" in overrides
    assert "+callbacks.lightning_es._target_=lightning.pytorch.callbacks.EarlyStopping" in overrides
    assert "+callbacks.lightning_es.patience=3" in overrides  # Lightning's documented default


def test_the_lightning_variant_composes_with_lightnings_early_stopping(monkeypatch, tmp_path):
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import EarlyStopping

    from wattwise.utils.compose import compose_run_config

    monkeypatch.setattr(bench, "native_bf16", lambda: False)
    cfg = compose_run_config(["data=mnist1d", *bench.variant_overrides("lightning")], tmp_path / "run")
    es = instantiate(cfg.callbacks.lightning_es)
    assert isinstance(es, EarlyStopping) and es.monitor == "val/acc" and es.mode == "max" and es.patience == 3
    assert cfg.trainer.precision == "32-true"
    assert bench.variant_overrides("baseline")[0] == "optim=[]"
    assert bench.variant_overrides("amp") == ["+optim=amp", "callbacks.amp.if_not_applicable=skip"]
    assert bench.variant_overrides("green") == ["+optim=green", "callbacks.power.profile_dir=null"]
    # every run pays its own search: no profile cached by an earlier seed's run
    cfg = compose_run_config(["data=mnist1d", *bench.variant_overrides("batch_size")], tmp_path / "bs")
    assert cfg.callbacks.batch_size.profile_dir is None
    assert bench.variant_overrides("amp+prune") == [
        "+optim=[amp,prune]",
        "callbacks.amp.if_not_applicable=skip",
        "callbacks.prune.if_not_applicable=skip",
    ]
    with pytest.raises(SystemExit, match="nope is not a method"):
        bench.variant_overrides("amp+nope")
    cfg = compose_run_config(["data=mnist1d", *bench.variant_overrides("amp+prune")], tmp_path / "combo")
    assert {"amp", "prune"} <= set(cfg.callbacks)


def test_the_order_of_variants_rotates_per_seed():
    v = ["a", "b", "c"]
    assert [bench.rotated(v, s) for s in range(4)] == [v, ["b", "c", "a"], ["c", "a", "b"], v]


def test_the_per_epoch_record_is_read_from_the_csv_logger(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    (d / "metrics.csv").write_text(
        "energy/total_J,epoch,step,val/acc\n"
        ",0,10,0.5\n"  # validation row
        "4.0,0,10,\n"  # epoch-end row of the same epoch
        ",1,20,0.8\n"
        "9.0,1,20,\n"
        ",,20,\n"  # a row without an epoch (e.g. test) is ignored
    )
    assert bench.read_curve(tmp_path) == [(0, 0.5, 4.0), (1, 0.8, 9.0)]
    assert bench.read_curve(tmp_path / "missing") == []


def _run(variant, seed, energy, acc, ett, status="completed"):
    run = {"task": "t", "variant": variant, "seed": seed, "status": status, "energy/total_J": energy}
    run.update({"test/acc": acc, "ett_J": ett, "energy/J_per_sample": 0.001, "time/train_s": 1.0})
    run.update({"epochs": 5, "energy/source": "estimate"})
    if status != "completed":
        run["error"] = "ValueError: bad"
    return run


def test_summaries_are_paired_and_count_failed_and_not_reached_runs():
    records = [
        # seed 1 runs on a machine twice as slow; green is 0.5x its own seed's baseline both times
        _run("baseline", 0, 10.0, 0.90, 6.0), _run("baseline", 1, 20.0, 0.90, 12.0),
        _run("lightning", 0, 8.0, 0.90, 6.0), _run("lightning", 1, 16.0, 0.90, 12.0),
        _run("green", 0, 5.0, 0.898, 3.0), _run("green", 1, 10.0, 0.896, None),  # seed 1 never got there
        _run("broken", 0, None, None, None, status="failed"),
    ]  # fmt: skip
    rows = {r["variant"]: r for r in bench.summarise(records, ["baseline", "lightning", "green", "broken"])}
    g = rows["green"]
    assert g["energy_x"].value == pytest.approx(0.5) and g["energy_x"].low == pytest.approx(0.5)
    assert g["energy_vs_lightning"].value == pytest.approx(0.625)
    assert g["J_per_sample_x"].value == pytest.approx(1.0)  # every run here saw 1 mJ/sample
    assert g["acc_delta_pt"].value == pytest.approx(-0.3)
    assert g["not_reached"] == 1 and g["ett_x"].n == 2 and math.isinf(g["ett_x"].high)
    assert rows["broken"]["failed"] == 1 and rows["broken"]["ok"] == 0
    table = bench.markdown_table(list(rows.values()))
    assert "failed: ValueError: bad" in table and "(ESTIMATE)" in table
    lines = bench.verdicts(list(rows.values()), {"t": bench.Task(("data=mnist1d",), "conv", 0.9, 3, "-")})
    head = "green energy as configured <= 0.5x baseline, <= 0.5 pt lost | t | green"
    assert any(line.startswith("PASS") and head in line for line in lines)
    assert any(line.startswith("PASS") and "0.8x lightning" in line for line in lines)  # 0.625x
    # to target: 0.5x in seed 0, never in seed 1: the median of [0.5, inf] is not reached
    assert any(line.startswith("FAIL") and "to target <= 0.7x" in line for line in lines)
    assert any("1/2 runs never reached the target" in line for line in lines)


def test_targets_are_fixed_once_per_task_below_the_papers_figures():
    assert set(bench.TASKS) == {"mnist1d+cnn1d", "mnist1d+gru", "tabular+mlp"}
    assert {t.kind for t in bench.TASKS.values()} == {"conv", "sequence", "tabular"}
    for t in bench.TASKS.values():
        assert 0 < t.target < int(t.paper.split()[-1].rstrip("%")) / 100
    docs = (ROOT / "docs" / "bench.md").read_text()
    for name, t in bench.TASKS.items():
        assert f"| {name} |" in docs and f"{100 * t.target:.0f}%" in docs


# The quick bench over a few variants of each kind (every method training alone on every net is the
# contract tests' job): the references, one method, a combination and the recipe.
QUICK_VARIANTS = ["baseline", "lightning", "early_stop", "data_cache+batch_size", "green"]


@pytest.mark.slow
def test_quick_bench_writes_its_tables_and_figures(tmp_path):
    out = tmp_path / "out" / "bench.md"
    script = str(ROOT / "bench" / "energy_bench.py")
    proc = subprocess.run(
        [sys.executable, script, "--quick", "--variants", ",".join(QUICK_VARIANTS), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "estimate: ~" in proc.stdout.split("[1/")[0]  # the estimate comes before the first run
    text = out.read_text()
    assert "an ESTIMATE" in text and "threads pinned: torch.set_num_threads(1)" in text
    variants = QUICK_VARIANTS
    rows = [
        line for line in text.splitlines() if line.startswith("| mnist1d") or line.startswith("| tabular")
    ]
    rows = [r for r in rows if r.split("|")[2].strip() in variants]
    assert len(rows) == len(bench.TASKS) * len(variants)
    for task in bench.TASKS:
        base = next(r for r in rows if r.startswith(f"| {task} | baseline |"))
        assert [c.strip() for c in base.strip("|").split("|")][2] == "1/1", base
    raw = json.loads(out.with_suffix(".json").read_text())
    assert len(raw["runs"]) == len(bench.TASKS) * len(variants)
    assert all(r["curve"] for r in raw["runs"] if r["status"] == "completed")  # per-epoch records read
    assert out.with_suffix(".csv").read_text().startswith("task,variant,runs,ok,failed,not_reached")
    for suffix in ("-pareto.png", "-curves.png"):
        assert (out.parent / f"{out.stem}{suffix}").stat().st_size > 1000
    assert "### Verdicts" in text and any(w in text for w in ("PASS", "FAIL", "n.a."))
    assert list((tmp_path / "data" / "mnist1d").glob("*.npz"))  # generated once, into the cache


def test_gpu_mode_without_a_gpu_says_so_in_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # pinned: whatever the host has
    with pytest.raises(SystemExit, match="--gpu needs a CUDA device"):
        bench.main(["--gpu"])


def test_gpu_mode_reads_the_idle_card_through_the_meter():
    """The idle draw comes from the same Zeus meter the runs use (a fake 70 W card here), reading only."""
    from fake_gpu import FakeGPU, install_fake_gpus

    gpu = FakeGPU(power_model=lambda limit_W: 70.0)
    with install_fake_gpus([gpu]):
        idle_W, source = bench.measure_idle_W(0, seconds=0.2)
    assert source == "zeus-nvml" and idle_W == pytest.approx(70.0, rel=0.05)
    assert gpu.limit_history == []  # nothing was set on the card
    assert bench.idle_lines([], None, "estimate") == [
        "- card idle power: not measured (estimate reads no GPU counter here)"
    ]


def test_the_gpu_bench_fits_on_the_products_resident_data(tmp_path, monkeypatch):
    """bench/gpu_bench.py's fit, on the CPU: it builds from the real config (trainer switches
    included) and trains on `data_cache`'s resident batches, not a loader of its own."""
    import torch

    from wattwise.methods.data_cache.resident import ResidentLoader

    gpu_bench = load_bench_module("gpu_bench")
    served = []
    iterate = ResidentLoader.__iter__
    monkeypatch.setattr(ResidentLoader, "__iter__", lambda self: served.append(self) or iterate(self))
    overrides = [
        "logger=none", "trainer=cpu", "energy=estimate", "cpu_threads=1",
        "++trainer.enable_progress_bar=false", "++trainer.enable_checkpointing=false",
        "data=digits", "model=mlp", "trainer.max_epochs=2",
    ]  # fmt: skip
    out = gpu_bench.fit_once(overrides, strict=True, device=torch.device("cpu"), work=tmp_path)
    assert out["epochs"] == 2 and 0 < out["test_acc"] <= 1 and out["J_per_sample"] > 0
    assert served and all(loader.leaves[0].device.type == "cpu" for loader in served)
