"""The overhead benchmark: its tasks, its ratios and tables (pure), and a tiny run end to end."""

from __future__ import annotations

import pytest
from conftest import load_bench_module

bench = load_bench_module("overhead_bench")


def test_tasks_are_the_default_run_and_the_energy_benchs_three():
    tasks = bench.bench_tasks()
    assert list(tasks) == ["default", "mnist1d+cnn1d", "mnist1d+gru", "tabular+mlp"]
    assert tasks["default"].overrides == ()  # whatever train.yaml's defaults are
    assert tasks["mnist1d+gru"].overrides == ("data=mnist1d", "model=gru")


def test_rows_pair_each_repeat_with_its_own_plain_loop_and_count_failures():
    records = [
        *({"task": "t", "loop": "plain", "repeat": i, "cpu_s": v} for i, v in enumerate([1.0, 2.0, 1.5])),
        *({"task": "t", "loop": "baseline", "repeat": i, "cpu_s": v} for i, v in enumerate([2.0, 3.0, 3.0])),
        {"task": "t", "loop": "green", "repeat": 0, "cpu_s": None, "error": "RuntimeError: boom"},
        {"task": "t", "loop": "green", "repeat": 1, "cpu_s": 1.2},
        {"task": "t", "loop": "floor", "cpu_s": 0.15, "gflop": 15.0, "rate_gflops": 100.0},
    ]
    rows = {r["loop"]: r for r in bench.summarise(records, ["plain", "baseline", "green"])}
    assert list(rows) == ["plain", "baseline", "green", "floor"]
    assert rows["plain"]["cpu_s"].value == 1.5 and rows["plain"]["x_plain"].value == 1.0
    assert rows["baseline"]["cpu_s"].value == 3.0
    assert rows["baseline"]["x_plain"].value == pytest.approx(2.0)  # median of 2.0, 1.5, 2.0: paired
    assert rows["baseline"]["x_plain"].has_interval
    assert rows["green"]["failed"] == 1 and rows["green"]["x_plain"].value == pytest.approx(0.6)
    assert rows["floor"]["x_plain"].value == pytest.approx(0.1)  # 0.15 s against plain's median 1.5 s
    md = bench.markdown_table(list(rows.values()))
    assert md.splitlines()[0] == "| task | loop | CPU s | x plain | x baseline | runs ok | note |"
    assert rows["green"]["x_baseline"].value == pytest.approx(1.2 / 3.0)  # paired with repeat 1's baseline
    assert "| t | baseline | 3.00 [" in md and "| 1/2 | failed: RuntimeError: boom |" in md
    assert "15.00 GFLOP at 100.0 GFLOP/s" in md
    assert len(bench.terminal_table(list(rows.values())).splitlines()) == 2 + len(rows)


def test_ablations_are_the_baseline_less_one_piece_each_then_all_of_them():
    assert bench.loop_overrides("no_ckpt", None) == [
        "callbacks.model_checkpoint=null",
        "callbacks.last_checkpoint=null",
    ]
    assert bench.loop_overrides("no_sanity", 2) == [
        "++trainer.num_sanity_val_steps=0",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=2",
    ]
    stripped = bench.loop_overrides("stripped", None)
    assert all(o in stripped for name in bench.ABLATIONS if name != "stripped" for o in bench.ABLATIONS[name])
    assert bench.loop_overrides("baseline", None) == []
    with pytest.raises(SystemExit, match="--loops"):
        bench.main(["--loops", "plain,no_such_piece"])


def test_the_loop_order_rotates_per_repeat():
    assert bench.rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert bench.rotated(["a", "b", "c"], 4) == ["b", "c", "a"]


def test_a_tiny_run_writes_its_table(tmp_path):
    out = tmp_path / "overhead.md"
    lines: list[str] = []
    argv = ["--quick", "--tasks", "default", "--loops", "plain,lightning,baseline", "--repeats", "1"]
    bench.main([*argv, "--epochs", "1", "--limit-batches", "3", "--out", str(out)], log=lines.append)
    text = out.read_text()
    for loop in ("plain", "lightning", "baseline", "floor"):
        assert f"| default | {loop} |" in text, text
    assert "failed" not in text and "QUICK" in text
    assert out.with_suffix(".json").is_file()


def test_the_profile_splits_time_by_package_and_names_the_pieces():
    from conftest import load_bench_module

    prof = load_bench_module("overhead_profile")
    assert prof.package_of(("/x/site-packages/torch/optim/adam.py", 1, "step")) == "torch"
    assert prof.package_of(("~", 0, "<method 'run_backward' of 'torch._C._EngineBase' objects>")) == "torch"
    assert prof.package_of(("/x/site-packages/lightning/pytorch/trainer/call.py", 2, "f")) == "lightning"
    assert prof.package_of(("/repo/src/wattwise/models/module.py", 3, "f")) == "wattwise"
    assert prof.package_of(("~", 0, "<built-in method builtins.isinstance>")) == "python and the rest"

    class FakeStats:  # pstats' raw form: {(file, line, name): (cc, nc, tottime, cumtime, callers)}
        stats = {
            ("/x/torch/nn/functional.py", 1, "linear"): (1, 1, 3.0, 3.0, {}),
            ("/x/lightning/pytorch/trainer/call.py", 9, "_call_callback_hooks"): (1, 1, 0.5, 1.5, {}),
            ("/x/lightning/pytorch/callbacks/model_checkpoint.py", 7, "_save_checkpoint"): (
                1,
                1,
                0.5,
                0.5,
                {},
            ),
        }

    total, by_package, pieces = prof.shares(FakeStats())
    assert total == 4.0 and by_package == {"torch": 3.0, "lightning": 1.0}
    assert pieces["checkpoint writes (serialise + atomic write)"] == 0.5
    assert pieces["callback hook dispatch (all callbacks' hooks, with what they do)"] == 1.5
    text = prof.report("t", total, by_package, pieces)
    assert "| torch | 3.00 | 75 % |" in text and text.startswith("### t: 4.00 s profiled")
