"""`make gpu-check` (bench/gpu_check.py): its plan, budget, no-GPU line, dry run and report.

No test looks at the host's hardware: the card is pinned away (CUDA_VISIBLE_DEVICES=) or faked,
and the report is built from scripted summaries.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, load_bench_module

from wattwise.utils.compose import compose_run_config

check = load_bench_module("gpu_check")
plan = sys.modules["gpu_check_plan"]
report = sys.modules["gpu_check_report"]


@pytest.fixture(scope="module")
def discovered():
    return check.discover()


def _plan(tmp_path: Path, discovered) -> list:
    variants, _, _ = discovered
    return plan.build_plan(check.check_tasks(), variants, tmp_path, None)


# ---- the plan -------------------------------------------------------------------------------------
def test_the_plan_runs_every_registered_method_and_recipe_on_each_task_baseline_first(tmp_path, discovered):
    registry = check._registry()  # the script's one import of it
    steps = _plan(tmp_path, discovered)
    assert steps[0].phase == "idle"
    wanted = ["baseline", *registry.method_names(), *registry.recipe_names()]
    assert "green" in wanted and "power" in wanted
    for task in check.CHECK_EPOCHS:
        finals = [s for s in steps if s.task == task and s.phase in ("resumed", "full")]
        assert [s.variant for s in finals] == wanted
    first, second = check.CHECK_EPOCHS
    halves = [s for s in steps if s.phase == "half"]
    assert {s.task for s in halves} == {first}  # the first task is resumed, once per variant
    resumed = {s.variant: s for s in steps if s.phase == "resumed"}
    for half in halves:
        r = resumed[half.variant]
        assert r.needs == (half.key,) and f"resume={half.run_dir}" in r.overrides
        assert "trainer.max_epochs=2" in half.overrides and "trainer.max_epochs=4" in r.overrides
    for s in steps[1:]:
        assert "trainer=gpu" in s.overrides or s.phase == "resumed"  # the resumed run replays them
        assert s.phase == "resumed" or "energy=auto" in s.overrides
        assert (
            s.variant == "baseline"
            or s.phase == "resumed"
            or s.after == (f"baseline@{s.task}/{'resumed' if s.task == first else 'full'}",)
        )


def test_power_runs_only_as_a_dry_run_alone_and_inside_green(tmp_path, discovered):
    registry = check._registry()  # the script's one import of it
    steps = _plan(tmp_path, discovered)
    with_power = [
        s
        for s in steps
        if s.variant == "power"
        or (s.variant in registry.recipe_names() and "power" in registry.recipe_members(s.variant))
    ]
    fresh = [s for s in with_power if s.phase != "resumed"]
    assert {s.variant for s in fresh} >= {"power", "green"}
    for s in fresh:
        cfg = compose_run_config(list(s.overrides), tmp_path / "cfg")
        assert cfg.callbacks.power.dry_run is True, s.key
        assert cfg.trainer.accelerator == "gpu"


def test_every_fresh_run_of_the_plan_composes(tmp_path, discovered):
    """The overrides are real keys of the real configs (a typo here would fail on the card)."""
    variants = discovered[0]
    for s in _plan(tmp_path, discovered):
        if s.phase in ("half", "full"):
            cfg = compose_run_config(list(s.overrides), tmp_path / "cfg")
            members = [m for v in variants if v.name == s.variant for m in v.members]
            assert all(cfg.callbacks[m].if_not_applicable == "skip" for m in members), s.key


def test_distill_learns_from_the_checks_own_baseline(tmp_path, discovered):
    steps = _plan(tmp_path, discovered)
    for s in (s for s in steps if s.variant == "distill" and s.phase != "resumed"):
        teacher = str(tmp_path / s.task / "baseline")
        assert f"callbacks.distill.teacher={teacher}" in s.overrides
        assert s.needs and s.needs[0].startswith(f"baseline@{s.task}/")


def test_the_bench_short_form_is_energy_benchs_own_cli_with_two_seeds():
    step, notes = check.bench_step(["amp", "prune", "data_cache", "green", "power"], Path("/x/r-energy.md"))
    args = list(step.overrides)
    assert args[:3] == ["--gpu", "--seeds", "2"] and args[-2:] == ["--out", "/x/r-energy.md"]
    assert args[args.index("--variants") + 1] == "baseline,amp,prune,data_cache,green"
    assert any("`compile` left out" in n for n in notes)
    step2, notes2 = check.bench_step(["amp", "compile"], Path("/x/r.md"))
    assert step2.overrides[4] == "baseline,amp,compile" and step2.estimate_s < step.estimate_s


# ---- the budget -----------------------------------------------------------------------------------
def test_a_step_runs_only_if_it_fits_and_what_it_needs_completed():
    s = plan.Step("b@t/resumed", "b", 30.0, needs=("b@t/half",), after=("base@t/full",))
    ok = {"b@t/half": "completed", "base@t/full": "failed"}  # a failed baseline was still run
    assert plan.skip_reason(s, 31.0, 1.0, ok) is None
    assert "would not fit: ~60 s estimated, 31 s" in plan.skip_reason(s, 31.0, 2.0, ok)
    assert "needs b@t/half" in plan.skip_reason(s, 999, 1.0, {**ok, "b@t/half": "failed"})
    assert "base@t/full was not run" in plan.skip_reason(s, 999, 1.0, {**ok, "base@t/full": "skipped"})


def test_estimates_are_scaled_by_how_long_finished_runs_took():
    assert plan.calibrated_scale([]) == 1.0
    assert plan.calibrated_scale([(10, 20), (10, 30), (10, 10)]) == 2.0
    assert plan.calibrated_scale([(10, 1000)]) == 4.0 and plan.calibrated_scale([(10, 0.1)]) == 0.5


def test_the_dry_run_drops_what_would_not_fit_and_what_depends_on_it():
    steps = [
        plan.Step("idle", "idle", 10.0),
        plan.Step("base@t/full", "base", 50.0),
        plan.Step("m@t/full", "m", 5.0, after=("base@t/full",)),
        plan.Step("n@u/full", "n", 20.0),
    ]
    rows = plan.simulate(steps, budget_s=40.0)
    assert [r is None for _, _, r in rows] == [True, False, False, True]
    assert [start for _, start, _ in rows] == [0.0, 10.0, 10.0, 10.0]
    text = plan.dry_run_text(steps, 40.0, ["a note"])
    assert "budget 0:40" in text and "would run 2 of 4 steps in ~0:30; skipped: 2" in text
    assert text.splitlines()[-1] == "a note"


def test_dry_run_lists_the_steps_in_order_without_a_gpu(monkeypatch, capsys, tmp_path):
    def no_card():
        raise AssertionError("the dry run must not look for a card")

    monkeypatch.setattr(check, "gpu_visible", no_card)
    assert check.main(["--dry-run", "--budget", "3", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "budget 3:00 (180 s" in lines[0]
    steps = [ln for ln in lines if ln[:5].strip().isdigit()]
    assert "idle power" in steps[0] and "baseline on mnist1d-40k+cnn1d: epochs 1-2" in steps[1]
    assert "energy bench short form" in steps[-1] and "SKIPPED: would not fit" in steps[-1]
    assert "never changes the card's power limit, clocks or modes" in out
    assert "the bench would not fit: run it alone with --parts bench" in out
    assert not list(tmp_path.iterdir())  # nothing run, nothing written


def test_without_a_gpu_it_stops_at_once_in_one_line():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode != 0 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "gpu_check: no CUDA card visible: the check runs on one (--dry-run lists its steps anywhere)"
    ]


# ---- the report from scripted summaries -----------------------------------------------------------
def _rec(variant, task, phase, summary=None, rc=0, skipped=None, error_line=None):
    step = plan.Step(f"{variant}@{task}/{phase}", f"{variant} {phase}", 10.0, variant, task, phase)
    return report.Record(step, skipped=skipped, rc=rc, seconds=5.0, summary=summary, error_line=error_line)


def _ok(J, step=10, epochs=2, source="zeus-nvml", resumed=False, **extra):
    over = ["ckpt_path=/r/last.ckpt"] if resumed else []
    return {
        "status": "completed",
        "energy/source": source,
        "energy/J_per_sample": J,
        "test/acc": 0.9,
        "global_step": step,
        "epochs": epochs,
        "overrides": over,
        **extra,
    }


def test_the_report_gives_each_methods_status_figures_and_ratio_to_the_baseline(tmp_path):
    V = plan.Variant
    variants = [V("baseline"), V("amp", ("amp",)), V("prune", ("prune",)), V("qat", ("qat",))]
    variants += [V("power", ("power",)), V("green", ("amp", "prune", "power"), recipe=True)]
    t, done = "mnist", {"step": 20, "epochs": 4, "resumed": True}
    amp = {"amp/precision": "bf16-mixed", "amp/status": "active"}
    aside = {"prune/status": "skipped", "prune/skipped": "net too small"}
    dry = {"power/status": "dry_run", "power/limit_W": 700.0, "resumed": True, "source": "estimate"}
    records = [
        _rec("baseline", t, "half", _ok(0.02)),
        _rec("baseline", t, "resumed", _ok(0.02, **done)),
        _rec("amp", t, "half", _ok(0.01)),
        _rec("amp", t, "resumed", _ok(0.01, **done, **amp)),
        _rec("prune", t, "half", _ok(0.02)),
        _rec("prune", t, "resumed", _ok(0.02, **done, **aside)),
        _rec("qat", t, "half", _ok(0.02)),
        _rec("qat", t, "resumed", {"status": "failed", "error": "RuntimeError: int8 kernel"}, rc=1),
        _rec("power", t, "half", _ok(0.02, step=10)),
        _rec("power", t, "resumed", _ok(0.02, step=10, **dry)),  # no step after the resume
        _rec("green", t, "half", skipped="would not fit: ~60 s estimated, 3 s of the budget left"),
        _rec("green", t, "resumed", skipped="needs green@mnist/half, which did not complete"),
    ]
    prefixes = {"amp": ("amp",), "prune": ("prune",), "qat": ("qat",), "power": ("power",)}
    rows = {r.variant: r for r in report.build_rows(records, variants, prefixes)}
    assert rows["baseline"].status == "completed" and rows["baseline"].x_baseline == 1.0
    assert rows["baseline"].resume == "ok: epoch 2 -> 4, step 10 -> 20"
    assert rows["amp"].x_baseline == pytest.approx(0.5)
    assert rows["amp"].figures == {"amp/precision": "bf16-mixed"}
    assert rows["prune"].status == "stepped aside" and rows["prune"].detail == "prune: net too small"
    assert rows["qat"].status == "failed"
    assert rows["qat"].detail == "after the resume: RuntimeError: int8 kernel"
    assert rows["power"].resume == "failed: global_step 10 after the resume, 10 before it"
    assert rows["power"].figures == {"power/limit_W": 700.0}
    assert rows["green"].status == "not run" and rows["green"].detail.startswith("would not fit")
    found = report.problems(list(rows.values()))
    assert found == [
        "qat on mnist: after the resume: RuntimeError: int8 kernel",
        "power on mnist: resume failed: global_step 10 after the resume, 10 before it",
        "power on mnist: energy/source is estimate, not zeus-nvml",
    ]
    card = {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54", "cuda": "12.4", "torch": "2.5.1"}
    card |= {"power_limit_before_W": 700.0, "power_limit_after_W": 700.0}
    text = report.report_text(card, list(rows.values()), records, 480, 300, "card idle power: 70.0 W", [])
    head = text.splitlines()[:6]
    assert head[0] == "# wattwise GPU check: NVIDIA H100 80GB HBM3"
    assert "- driver: 550.54" in head and "- CUDA: 12.4" in head and "- torch: 2.5.1" in head
    assert "- power limit before the runs: 700.0 W, after: 700.0 W (read only)" in text
    assert "CHANGED" not in text and report.READ_ONLY in text
    assert "- result: FAIL (3 problem(s))" in text and "- green epochs 1-2" not in text
    assert "- green half: would not fit" in text
    changed = report.report_text({**card, "power_limit_after_W": 300.0}, [], [], 480, 1, "idle", [])
    assert "the power limit CHANGED" in changed
    assert "- the card's power limit changed during the check" in changed
    table = list(csv.DictReader(io.StringIO(report.rows_csv(list(rows.values())))))
    assert [r["variant"] for r in table] == ["baseline", "amp", "prune", "qat", "power", "green"]
    assert table[1]["x_baseline"] == "0.5" and table[2]["status"] == "stepped aside"


def test_green_completes_while_a_member_steps_aside_and_says_which():
    green = plan.Variant("green", ("amp", "power"), recipe=True)
    s = _ok(0.01, **{"amp/status": "active", "power/status": "skipped", "power/skipped": "no GPU limits"})
    row = report.build_row(green, "t", [_rec("green", "t", "full", s)], {})
    assert row.status == "completed" and row.detail == "power: no GPU limits" and row.resume == ""


def test_a_failure_is_named_by_its_own_error_line():
    text = (
        "INFO starting\nTraceback (most recent call last):\n  File x\nValueError: bad shape\nwarning after\n"
    )
    assert check.last_error_line(text) == "ValueError: bad shape"
    text += "wattwise: error: callbacks.prune.ratio must be < 1\n"
    assert check.last_error_line(text) == "wattwise: error: callbacks.prune.ratio must be < 1"
    assert check.last_error_line("") is None


def test_a_run_past_its_time_is_killed_and_reported(tmp_path):
    rc, took, text = check.run_process(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "x.log", timeout_s=1.0
    )
    assert rc == -9 and took < 30 and "TimeoutError: stopped after 1 s" in text


def test_report_names_carry_the_date_and_card_and_never_overwrite(tmp_path):
    from datetime import datetime, timezone

    now = datetime(2026, 12, 7, 20, 5, tzinfo=timezone.utc)
    first = check.report_paths(tmp_path, "NVIDIA H100 80GB HBM3", now)
    assert first.name == "gpu-2026-12-07-nvidia-h100-80gb-hbm3.md"
    first.write_text("x")
    assert (
        check.report_paths(tmp_path, "NVIDIA H100 80GB HBM3", now).name
        == "gpu-2026-12-07-2005-nvidia-h100-80gb-hbm3.md"
    )


def test_the_bench_section_quotes_energy_benchs_results_or_says_why_it_did_not_run(tmp_path):
    md = tmp_path / "r-energy.md"
    md.write_text(
        "## head\n\n### Targets\n\nx\n### Results\n\n| a |\n### Verdicts\n\n- PASS\n### Figures\n\n![](p)\n"
    )
    step = plan.Step("bench", "energy bench", 1.0, phase="bench", run_dir=str(md))
    ran = report.bench_section(report.Record(step, rc=0, summary={"status": "completed"}), ["note"])
    assert ran[:2] == ["## Energy benchmark, short form", ""] and "- note" in ran
    assert ran[-6:] == ["### Results", "", "| a |", "### Verdicts", "", "- PASS"]
    assert "### Targets" not in ran and "### Figures" not in ran
    skipped = report.bench_section(report.Record(step, skipped="would not fit"), [])
    assert any("not run: would not fit" in ln and "--parts bench" in ln for ln in skipped)


# ---- the runner, end to end on the CPU -------------------------------------------------------------
@pytest.mark.slow
def test_the_runner_trains_resumes_and_reports_through_train_py(tmp_path, monkeypatch):
    """The card's settings swapped for the CPU's: two train.py halves and a resume, read back."""
    cpu = "trainer=cpu energy=estimate logger=csv seed=0 cpu_threads=1 ++callbacks.progress_bar=null"
    monkeypatch.setattr(plan, "COMMON", (*cpu.split(), "++callbacks.energy_report.plot=false"))
    tiny = tuple("data=digits model=mlp +trainer.limit_train_batches=3 +trainer.limit_val_batches=2".split())
    task = plan.CheckTask("tiny", tiny, epochs=2, resume=True)
    variants = [plan.Variant("baseline"), plan.Variant("early_stop", ("early_stop",))]
    steps = plan.build_plan([task], variants, tmp_path, None)[1:]
    records = check.run_plan(steps, budget_s=600, started=__import__("time").perf_counter(), idle=None)
    rows = report.build_rows(records, variants, {"early_stop": ("early_stop", "stop")})
    assert [r.status for r in rows] == ["completed", "completed"], [r.detail for r in rows]
    assert all(r.resume.startswith("ok: epoch 1 -> 2") for r in rows), [r.resume for r in rows]
    assert rows[1].figures.get("stop/reason") and rows[1].x_baseline is not None
    nvml = [f"{r.variant} on tiny: energy/source is estimate, not zeus-nvml" for r in rows]
    assert report.problems(rows) == nvml


def _fake_card(monkeypatch, runs: list, fail: str | None = None) -> None:
    """The card and every run faked: the orchestration, budget and report files tested alone."""
    import torch

    monkeypatch.setattr(check, "gpu_visible", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    card = {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54", "cuda": "12.4", "torch": "2.5.1"}
    monkeypatch.setattr(check, "card_info", lambda i: {**card, "power_limit_before_W": 700.0})
    monkeypatch.setattr(check, "power_limit_W", lambda i: 700.0)
    monkeypatch.setattr(check.energy_bench, "measure_idle_W", lambda i, s: (61.5, "zeus-nvml"))

    def train(step, timeout_s):
        runs.append(step)
        if step.variant == fail:
            failed = {"status": "failed", "error": "CUDA error: boom"}
            return report.Record(step, rc=1, seconds=1.0, summary=failed)
        resumed = step.phase == "resumed"
        s = _ok(0.01 if step.variant == "baseline" else 0.008, step=20 if resumed else 10, resumed=resumed)
        s.update({f"{step.variant}/status": "active"})
        return report.Record(step, rc=0, seconds=1.0, summary=s)

    def bench(step, timeout_s):
        runs.append(step)
        Path(step.run_dir).write_text("### Results\n\n| baseline | 1.00 |\n### Verdicts\n\n- PASS\n")
        return report.Record(step, rc=0, seconds=1.0, summary={"status": "completed"})

    monkeypatch.setattr(check, "run_train", train)
    monkeypatch.setattr(check, "run_bench", bench)


def test_on_a_card_every_step_runs_and_the_report_and_csv_are_written(monkeypatch, tmp_path, discovered):
    runs: list = []
    _fake_card(monkeypatch, runs)
    rc = check.main(["--out-dir", str(tmp_path), "--work", str(tmp_path / "work"), "--budget", "60"])
    assert rc == 0
    (md,) = tmp_path.glob("gpu-*-nvidia-h100-80gb-hbm3.md")
    text = md.read_text()
    assert "- card idle power: 61.5 W" in text and "- result: PASS" in text and report.READ_ONLY in text
    assert "| baseline | 1.00 |" in text and "- PASS" in text  # the bench's own tables, quoted
    rows = list(csv.DictReader(md.with_suffix(".csv").open()))
    assert len(rows) == 2 * len(discovered[0]) and {r["status"] for r in rows} == {"completed"}
    assert {r["x_baseline"] for r in rows if r["variant"] != "baseline"} == {"0.8"}
    assert runs[-1].phase == "bench" and runs[0].key == "baseline@mnist1d-40k+cnn1d/half"


def test_a_failed_method_fails_the_check_and_is_named_with_its_error(monkeypatch, tmp_path):
    _fake_card(monkeypatch, [], fail="qat")
    rc = check.main(["--out-dir", str(tmp_path), "--work", str(tmp_path / "w"), "--parts", "methods"])
    assert rc == 1
    text = next(tmp_path.glob("gpu-*.md")).read_text()
    assert "- qat on mnist1d-40k+cnn1d: first half: CUDA error: boom" in text
    assert "- qat on synthetic+resnet18: CUDA error: boom" in text and "Energy benchmark" not in text
