"""`make gpu-check`: every registered method and `green` proven on one CUDA card, in one command.

    python bench/gpu_check.py               # on a card: ~8 minutes, set-up included
    python bench/gpu_check.py --dry-run     # anywhere: the steps, in order, with estimates and the budget
    python bench/gpu_check.py --budget 15 --parts bench   # the energy bench's short form alone

A card is lent to this project now and then, for minutes, so the check must run at once and fit.
In order: the card's idle power; every registered method and recipe, the baseline first, through
`train.py` (one subprocess per run, as a user runs it) with `energy=auto` (NVML), on MNIST-1D at
40,000 samples with the 1D CNN in two halves (the second resumes from the first's last.ckpt with
`resume=<run dir>`), then on the synthetic ResNet-18; then the GPU energy bench's short form
(bench/energy_bench.py --gpu, 2 seeds). A step that would not fit the time left is skipped and
named. The report (markdown + CSV) goes to bench/results/gpu-<date>-<card>.{md,csv}.

Read-only towards the card: `power` runs with its dry run only (and WATTWISE_POWER_DRY_RUN=1 for
every run), nothing sets a power limit, clock or mode; the limit is read before and after.
Planning is bench/gpu_check_plan.py, the report bench/gpu_check_report.py (pure functions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's package
sys.path.insert(0, str(HERE))  # bench/energy_bench.py, gpu_check_plan.py, gpu_check_report.py

import energy_bench  # noqa: E402
import gpu_check_plan as plan  # noqa: E402
import gpu_check_report as report  # noqa: E402

# The check's epochs per task (fewer than energy_bench's: every method must fit the budget);
# the first task runs in two halves with a resume between them.
CHECK_EPOCHS = {"mnist1d-40k+cnn1d": 4, "synthetic+resnet18": 2}
BENCH_SEEDS = 2
BENCH_VARIANTS = ("baseline", "amp", "prune", "compile", "data_cache", "green")  # the short form
RESULTS_DIR = ROOT / "bench" / "results"


def _registry() -> ModuleType:
    """The method registry: the one import to re-point when it moves."""
    from wattwise.methods import registry

    return registry


def discover() -> tuple[list[plan.Variant], dict[str, tuple[str, ...]], list[str]]:
    """(variants: baseline, every registered method, every recipe), each method's figure prefixes,
    and every `optim` option: all read from the registry, none kept by hand here."""
    reg = _registry()
    reg.register_recipes()
    classes = reg.method_classes()
    variants = [plan.Variant("baseline")]
    variants += [plan.Variant(n, (n,)) for n in reg.method_names()]
    variants += [plan.Variant(r, tuple(reg.recipe_members(r)), recipe=True) for r in reg.recipe_names()]
    prefixes = {n: tuple(dict.fromkeys(p for p in (n, c.figure_prefix) if p)) for n, c in classes.items()}
    return variants, prefixes, reg.option_names()


def check_tasks() -> list[plan.CheckTask]:
    """energy_bench's GPU-sized tasks (the same overrides), with the check's epochs."""
    return [
        plan.CheckTask(name, energy_bench.GPU_TASKS[name].overrides, epochs, resume=i == 0)
        for i, (name, epochs) in enumerate(CHECK_EPOCHS.items())
    ]


def bench_step(options: Sequence[str], out_md: Path) -> tuple[plan.Step, list[str]]:
    """The energy bench's short form as one step (energy_bench.py's own CLI), and notes on the
    variants this checkout lacks."""
    chosen = [v for v in BENCH_VARIANTS if v == "baseline" or v in options]
    notes = [
        f"energy bench: `{v}` left out: not an option in this checkout"
        for v in BENCH_VARIANTS
        if v not in chosen
    ]
    notes.append("energy bench: its baseline is 32-true with PyTorch's defaults (TF32 for convolutions only)")
    tasks = {t: energy_bench.GPU_TASKS[t].epochs for t in energy_bench.GPU_TASKS}
    args = ("--gpu", "--seeds", str(BENCH_SEEDS), "--variants", ",".join(chosen), "--out", str(out_md))
    est = plan.bench_estimate(tasks, len(chosen), BENCH_SEEDS)
    label = f"energy bench short form: bench/energy_bench.py {' '.join(args[:5])} ({', '.join(tasks)})"
    return plan.Step("bench", label, est, phase="bench", overrides=args, run_dir=str(out_md)), notes


# ---- the card (read only) -------------------------------------------------------------------------
def gpu_visible() -> bool:
    """Is a CUDA card visible? Quietly: a CUDA build without a driver warns on stderr."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(torch.cuda.is_available())


def power_limit_W(index: int) -> float | None:
    """The card's power limit as NVML reports it: read, never set."""
    with contextlib.suppress(Exception):
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetPowerManagementLimit(pynvml.nvmlDeviceGetHandleByIndex(index)) / 1000
    return None


def card_info(index: int) -> dict[str, Any]:
    """Name, driver, CUDA, torch and lightning versions, the checkout's commit, the power limit."""
    import lightning
    import torch

    info: dict[str, Any] = {
        "name": torch.cuda.get_device_name(index),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "driver": "unknown",
        "power_limit_before_W": power_limit_W(index),
    }
    with contextlib.suppress(Exception):
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        info["driver"] = driver.decode() if isinstance(driver, bytes) else driver
    with contextlib.suppress(Exception):
        git = ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]
        info["commit"] = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    return info


def report_paths(out_dir: Path, card: str, now: datetime) -> Path:
    """bench/results/gpu-<date>-<card>.md; a second check on the same day gets the time as well."""
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-") or "gpu"
    path = out_dir / f"gpu-{now:%Y-%m-%d}-{slug}.md"
    return path if not path.exists() else out_dir / f"gpu-{now:%Y-%m-%d-%H%M}-{slug}.md"


# ---- running -------------------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    env = dict(os.environ, WATTWISE_POWER_DRY_RUN="1", WANDB_MODE="disabled")
    env.setdefault("MPLCONFIGDIR", "/tmp/wattwise-mpl")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env


def last_error_line(text: str) -> str | None:
    """The line a failure names: wattwise's own one-line error, else the last exception line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pick in (
        lambda ln: ln.startswith("wattwise: error"),
        lambda ln: re.match(r"^\w+(Error|Exception)", ln),
    ):
        found = [ln for ln in lines if pick(ln)]
        if found:
            return found[-1]
    return lines[-1] if lines else None


def run_process(cmd: Sequence[str], log: Path, timeout_s: float) -> tuple[int, float, str]:
    """Run one command, its output into `log`; killed (its whole group) past timeout_s."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=child_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            f.write(f"\ngpu_check: TimeoutError: stopped after {timeout_s:.0f} s\n")
            rc = -9
    return rc, time.perf_counter() - t0, log.read_text(errors="replace")


def run_train(step: plan.Step, timeout_s: float) -> report.Record:
    """One `train.py` run of the plan, as a user runs it; its summary.json read back."""
    cmd = [sys.executable, str(ROOT / "train.py"), *step.overrides, f"hydra.run.dir={step.run_dir}"]
    rc, took, text = run_process(cmd, Path(step.run_dir + ".log"), timeout_s)
    path = Path(step.run_dir) / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else None
    rec = report.Record(step, rc=rc, seconds=took, summary=summary)
    if not rec.completed:
        rec.error_line = last_error_line(text)
    return rec


def run_bench(step: plan.Step, timeout_s: float) -> report.Record:
    """The energy bench's short form: bench/energy_bench.py's own CLI, in a process of its own."""
    cmd = [sys.executable, str(HERE / "energy_bench.py"), *step.overrides]
    rc, took, text = run_process(cmd, Path(step.run_dir).with_suffix(".log"), timeout_s)
    rec = report.Record(step, rc=rc, seconds=took, summary={"status": "completed"} if rc == 0 else {})
    rec.error_line = None if rc == 0 else last_error_line(text)
    return rec


def run_plan(
    steps: Sequence[plan.Step], budget_s: float, started: float, idle: Callable[[plan.Step], report.Record]
) -> list[report.Record]:
    """The plan in order; each step run only if its calibrated estimate fits the time left."""
    records: list[report.Record] = []
    state: dict[str, str] = {}
    timed: list[tuple[float, float]] = []
    for step in steps:
        left = budget_s - (time.perf_counter() - started)
        why = plan.skip_reason(step, left, plan.calibrated_scale(timed), state)
        if why:
            rec = report.Record(step, skipped=why)
        elif step.phase == "idle":
            rec = idle(step)
        elif step.phase == "bench":
            rec = run_bench(step, max(left, 60.0))
        else:
            rec = run_train(step, max(left, 30.0) + 30.0)
            timed.append((step.estimate_s, rec.seconds))
        state[step.key] = "skipped" if rec.skipped else "completed" if rec.completed else "failed"
        records.append(rec)
        said = (
            f"skipped: {rec.skipped}" if rec.skipped else "ok" if rec.completed else f"FAILED: {rec.error()}"
        )
        print(f"  [{len(records)}/{len(steps)}] {step.label}: {said} ({rec.seconds:.0f} s)", flush=True)
    return records


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="list the steps, estimates and budget; run nothing")
    p.add_argument(
        "--budget", type=float, default=plan.DEFAULT_BUDGET_S / 60, help="minutes, set-up included (8)"
    )
    p.add_argument("--parts", default="methods,bench", help="comma list of methods, bench (default both)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the report goes (bench/results)")
    p.add_argument("--work", type=Path, default=None, help="run dirs (default bench/out/gpu-check-<time>)")
    return p.parse_args(argv)


@dataclass
class Planned:
    steps: list[plan.Step]
    variants: list[plan.Variant]
    prefixes: dict[str, tuple[str, ...]]
    notes: list[str]


def make_plan(args: argparse.Namespace, out_md: Path) -> Planned:
    """The check's steps for the parts asked for (`--parts`), from the registry's methods."""
    parts = set(args.parts.split(","))
    if not parts <= {"methods", "bench"}:
        raise SystemExit(f"gpu_check: --parts takes methods, bench; got {args.parts}")
    variants, prefixes, options = discover()
    bench, notes = bench_step(options, out_md.with_name(out_md.stem + "-energy.md"))
    tasks = check_tasks() if "methods" in parts else []
    steps = plan.build_plan(tasks, variants, args.work, bench if "bench" in parts else None)
    return Planned(steps, variants, prefixes, notes)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    budget_s = 60 * args.budget
    now = datetime.now(timezone.utc)
    args.work = args.work or ROOT / "bench" / "out" / f"gpu-check-{now:%Y%m%d-%H%M%S}"
    if args.dry_run:
        planned = make_plan(args, report_paths(args.out_dir, "card", now))
        dropped = {s.phase for s, _, why in plan.simulate(planned.steps, budget_s) if why}
        hint = ["the bench would not fit: run it alone with --parts bench"] if "bench" in dropped else []
        print(plan.dry_run_text(planned.steps, budget_s, [*planned.notes, *hint, report.READ_ONLY]))
        return 0
    if not gpu_visible():
        sys.exit(
            "gpu_check: no CUDA card visible: the check runs on one (--dry-run lists its steps anywhere)"
        )
    return run_check(args, budget_s, started, now)


def run_check(args: argparse.Namespace, budget_s: float, started: float, now: datetime) -> int:
    """On the card: plan, run, write the report; exit 1 where a run failed."""
    import torch

    energy_bench.quiet()
    index = torch.cuda.current_device()
    card = card_info(index)
    out_md = report_paths(args.out_dir, card["name"], now)
    planned = make_plan(args, out_md)
    print(
        f"gpu_check on {card['name']} (driver {card['driver']}, CUDA {card['cuda']}, torch {card['torch']})"
    )
    print(report.READ_ONLY, flush=True)

    def idle(step: plan.Step) -> report.Record:
        t0 = time.perf_counter()
        watts, source = energy_bench.measure_idle_W(index, plan.IDLE_S)
        summary = {"status": "completed", "idle_W": watts, "idle_source": source}
        return report.Record(step, rc=0, seconds=time.perf_counter() - t0, summary=summary)

    records = run_plan(planned.steps, budget_s, started, idle)
    card["power_limit_after_W"] = power_limit_W(index)
    rows = report.build_rows([r for r in records if r.step.task], planned.variants, planned.prefixes)
    idle_s = next((r.summary for r in records if r.step.phase == "idle" and r.summary), {})
    bench = next((r for r in records if r.step.phase == "bench"), None)
    section = report.bench_section(bench, planned.notes) if bench else []
    idle_line = report.idle_text(idle_s.get("idle_W"), idle_s.get("idle_source", "not measured"))
    text = report.report_text(
        card, rows, records, budget_s, time.perf_counter() - started, idle_line, section
    )
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    out_md.with_suffix(".csv").write_text(report.rows_csv(rows))
    print("\n" + text + f"\nReport: {out_md} (+ .csv); run dirs: {args.work}")
    bench_failed = bench is not None and bench.skipped is None and not bench.completed
    return 1 if report.all_problems(card, rows) or bench_failed else 0


if __name__ == "__main__":
    sys.exit(main())
