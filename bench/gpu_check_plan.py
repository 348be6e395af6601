"""What `make gpu-check` runs, in what order, and what fits its time budget: pure functions only.

A card is lent for minutes at a time, so the check is planned before it starts: every step has an
estimate, a step that would not fit the time left is skipped and named in the report, and the
estimates are scaled by how long the finished runs really took (calibrated_scale). Nothing here
touches a GPU, a subprocess or the registry: bench/gpu_check.py passes the method names in, and
tests/test_gpu_check.py drives these functions with scripted inputs.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BUDGET_S = 8 * 60.0  # the ceiling on an H100, set-up included
IDLE_S = 10.0  # the card read idle before any run (energy_bench.GPU_IDLE_S)
# Guesses until the first card run times them (then replace them with its figures): a train.py
# process to its first step on the card plus its test pass; one epoch per task; a method's own
# fit-start work (searches, measured trials, exports). calibrated_scale() corrects them as runs finish.
# For scale: gpu_bench on an H100 (2026-11-26) ran a ResNet-18 epoch of 19,661 resident samples in
# ~1.1-1.4 s; the check's ResNet-18 task is narrower and smaller but goes through the loader.
STARTUP_S = 12.0
EPOCH_S: dict[str, float] = {"mnist1d-40k+cnn1d": 2.0, "synthetic+resnet18": 2.0}
DEFAULT_EPOCH_S = 2.0
DATA_S = 20.0  # the first run of a task generates its data into data/ (MNIST-1D at 40,000 samples)
METHOD_EXTRA_S: dict[str, float] = {
    "batch_size": 20.0,
    "power": 10.0,
    "prune": 8.0,
    "qat": 8.0,
    "amp": 4.0,
    "distill": 4.0,
}
BENCH_RUN_S = 3.0  # energy_bench: per in-process run beyond its epochs (build, test pass)
# The check's own run settings: every run on the card, NVML energy, a fixed seed, no plots.
COMMON = (
    "trainer=gpu",
    "energy=auto",
    "logger=csv",
    "seed=0",
    "++callbacks.progress_bar=null",
    "++trainer.enable_progress_bar=false",
    "++callbacks.energy_report.plot=false",
)
POWER_DRY_RUN = "callbacks.power.dry_run=true"  # conf/optim/power.yaml: change nothing, report the plan


@dataclass(frozen=True)
class CheckTask:
    name: str
    overrides: tuple[str, ...]
    epochs: int
    resume: bool  # run in two halves: the second resumes from the first's last.ckpt


@dataclass(frozen=True)
class Variant:
    """The baseline (no members), one registered method, or a recipe with its members."""

    name: str
    members: tuple[str, ...] = ()
    recipe: bool = False


@dataclass(frozen=True)
class Step:
    key: str  # "<variant>@<task>/<phase>", unique
    label: str
    estimate_s: float
    variant: str = ""
    task: str = ""
    phase: str = ""  # half | resumed | full | idle | bench
    overrides: tuple[str, ...] = ()
    run_dir: str = ""
    needs: tuple[str, ...] = field(default=())  # keys that must have completed first
    after: tuple[str, ...] = field(default=())  # keys that must have run (a task's baseline: the reference)


def method_settings(name: str, epochs: int, teacher: str | None) -> list[str]:
    """Overrides that let a method act within the check's few epochs and keep the card untouched."""
    half = max(1, epochs // 2)
    table: dict[str, list[str]] = {
        # dry run only; few, wide steps between limits so its walk fits a few hundred batches
        "power": [
            POWER_DRY_RUN,
            "callbacks.power.profile_dir=null",
            "callbacks.power.pl_step_W=100",
            "callbacks.power.warmup_steps=2",
            "callbacks.power.profile_steps=8",
            "callbacks.power.blocks=2",
        ],
        "batch_size": ["callbacks.batch_size.profile_dir=null"],  # every run pays its own search
        # one prune before the resume and one after it (task with a resume), or one prune
        "prune": ["callbacks.prune.start_epoch=1", f"callbacks.prune.end_epoch={max(1, half)}"],
        "carbon_aware": ["callbacks.carbon_aware.deadline_h=0"],  # never wait for a greener hour
    }
    out = list(table.get(name, []))
    if name == "distill" and teacher:  # the teacher is this check's own baseline on the task
        out += [f"callbacks.distill.teacher={teacher}", f"callbacks.distill.baseline={teacher}"]
    return out


def variant_overrides(v: Variant, epochs: int, teacher: str | None) -> list[str]:
    """The `train.py` overrides that make a variant; every method may step aside (and says why)."""
    if not v.members:
        return ["optim=[]"]
    settings = [o for m in v.members for o in method_settings(m, epochs, teacher)]
    if v.recipe:
        return [f"+optim={v.name}", *settings]
    return [f"+optim={v.name}", f"callbacks.{v.name}.if_not_applicable=skip", *settings]


def _estimate(task: CheckTask, v: Variant, epochs: int, fresh: bool, first: bool) -> float:
    epoch_s = EPOCH_S.get(task.name, DEFAULT_EPOCH_S)
    extra = sum(METHOD_EXTRA_S.get(m, 0.0) for m in v.members) if fresh else 0.0
    return STARTUP_S + epochs * epoch_s + extra + (DATA_S if first else 0.0)


def task_steps(task: CheckTask, variants: Sequence[Variant], work: Path) -> list[Step]:
    """Every variant on one task: halves with a resume, or one whole run; the baseline first
    (the reference of every J/sample ratio and the teacher that `distill` needs)."""
    steps: list[Step] = []
    base_key: str | None = None
    half = max(1, task.epochs // 2)
    for i, v in enumerate(variants):
        wants_teacher = "distill" in v.members and base_key is not None
        teacher = str(work / task.name / "baseline") if wants_teacher else None
        body = (*task.overrides, *COMMON, *variant_overrides(v, task.epochs, teacher))
        needs = (base_key,) if wants_teacher and base_key else ()
        after = (base_key,) if base_key else ()
        run, key = str(work / task.name / v.name), f"{v.name}@{task.name}"
        common = dict(variant=v.name, task=task.name)
        if task.resume:
            first = Step(
                f"{key}/half",
                f"{v.name} on {task.name}: epochs 1-{half}",
                _estimate(task, v, half, True, i == 0),
                phase="half",
                run_dir=run + "-half",
                overrides=(*body, f"trainer.max_epochs={half}", "test=false"),
                needs=needs,
                after=after,
                **common,
            )
            final = Step(
                f"{key}/resumed",
                f"{v.name} on {task.name}: resumed, epochs {half + 1}-{task.epochs}",
                _estimate(task, v, task.epochs - half, False, False),
                phase="resumed",
                run_dir=run,
                overrides=(f"resume={first.run_dir}", f"trainer.max_epochs={task.epochs}", "test=true"),
                needs=(first.key,),
                **common,
            )
            steps += [first, final]
        else:
            final = Step(
                f"{key}/full",
                f"{v.name} on {task.name}: {task.epochs} epochs",
                _estimate(task, v, task.epochs, True, i == 0),
                phase="full",
                run_dir=run,
                overrides=(*body, f"trainer.max_epochs={task.epochs}"),
                needs=needs,
                after=after,
                **common,
            )
            steps.append(final)
        if not v.members:
            base_key = final.key
    return steps


def bench_estimate(tasks: Mapping[str, int], variants: int, seeds: int) -> float:
    """energy_bench --gpu: one untimed warm-up epoch per task, then every variant, task and seed."""
    warm = sum(STARTUP_S / 2 + EPOCH_S.get(t, DEFAULT_EPOCH_S) for t in tasks)
    runs = sum(EPOCH_S.get(t, DEFAULT_EPOCH_S) * e + BENCH_RUN_S for t, e in tasks.items())
    return STARTUP_S + IDLE_S + warm + seeds * variants * runs


def build_plan(
    tasks: Sequence[CheckTask], variants: Sequence[Variant], work: Path, bench: Step | None
) -> list[Step]:
    """The whole check in order: idle power, every variant on each task in turn, the bench last.

    Tasks come one after the other (not variant by variant), so a budget that runs short drops
    the later task and the bench, never a method's only run."""
    plan = [Step("idle", f"set-up: the card's idle power, {IDLE_S:.0f} s, read only", IDLE_S, phase="idle")]
    for task in tasks:
        plan += task_steps(task, variants, work)
    return [*plan, *([bench] if bench else [])]


def skip_reason(step: Step, left_s: float, scale: float, state: Mapping[str, str]) -> str | None:
    """Why a step is not run now (None: run it): a step it needs did not complete (state:
    key -> completed | failed | skipped), its task's baseline was not run (no reference for
    its ratios: the budget drops a task whole), or it would not fit the time left."""
    missing = [k for k in step.needs if state.get(k) != "completed"]
    if missing:
        return f"needs {missing[0]}, which did not complete"
    unrun = [k for k in step.after if state.get(k, "skipped") == "skipped"]
    if unrun:
        return f"{unrun[0]} was not run (the reference of this task)"
    need = step.estimate_s * scale
    if need > left_s:
        return f"would not fit: ~{need:.0f} s estimated, {max(0.0, left_s):.0f} s of the budget left"
    return None


def calibrated_scale(pairs: Sequence[tuple[float, float]], low: float = 0.5, high: float = 4.0) -> float:
    """How far the estimates are off: the median of (took / estimated) over finished runs, clamped
    (one odd run must not make the check skip everything or overrun); 1.0 before any run."""
    ratios = [took / est for est, took in pairs if est > 0 and took >= 0]
    return min(high, max(low, statistics.median(ratios))) if ratios else 1.0


def simulate(plan: Sequence[Step], budget_s: float) -> list[tuple[Step, float, str | None]]:
    """The dry run: each step with the time it would start at and why it would be skipped (or None),
    every estimate taken as exact."""
    out, clock, state = [], 0.0, {}
    for step in plan:
        reason = skip_reason(step, budget_s - clock, 1.0, state)
        state[step.key] = "skipped" if reason else "completed"
        out.append((step, clock, reason))
        clock += 0.0 if reason else step.estimate_s
    return out


def fmt_s(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def dry_run_text(plan: Sequence[Step], budget_s: float, notes: Sequence[str] = ()) -> str:
    """What `--dry-run` prints: every step in order, its estimate, when it would start, and what
    the budget would skip."""
    rows = simulate(plan, budget_s)
    lines = [
        f"gpu_check --dry-run: the steps on one CUDA card, in order; budget {fmt_s(budget_s)} "
        f"({budget_s:.0f} s, set-up included); estimates are guesses until timed on a card",
        f"  {'#':>3}  {'starts':>6}  {'estimate':>8}  step",
    ]
    for i, (step, start, reason) in enumerate(rows, 1):
        tail = f"  -> SKIPPED: {reason}" if reason else ""
        lines.append(f"  {i:>3}  {fmt_s(start):>6}  {step.estimate_s:>6.0f} s  {step.label}{tail}")
    ran = [s for s, _, r in rows if r is None]
    total = sum(s.estimate_s for s in ran)
    lines.append(
        f"would run {len(ran)} of {len(rows)} steps in ~{fmt_s(total)}; skipped: {len(rows) - len(ran)}"
    )
    return "\n".join([*lines, *notes])
