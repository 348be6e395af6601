"""Distill benchmark: is a distilled student cheaper than one trained alone, counting the teacher?

Per task and seed: a teacher (a wider net of the same family) is trained once; then the student
is trained four ways, in an order rotated per seed: from scratch (`scratch`), distilled with the
teacher run every step (`distill`), distilled from cached logits in the run that builds the cache
(`cached_build`) and in a later run that finds it (`cached`). Reported per variant: test accuracy,
fit energy and energy to the task's target (the energy benchmark's targets, bench/energy_bench.py),
each as a median with a 95% bootstrap interval over seeds, the teacher's metered share
(`distill/teacher_J`), and the break-even in student runs:

    one_off  = teacher's training energy (+ building the cache, for the cached variants)
    saving   = scratch's energy to target - this variant's energy to target (cached: a reuse run)
    break-even = one_off / saving; never (inf) when saving <= 0 or the variant misses the target;
                 n.a. when the scratch student never reaches it (distillation then buys accuracy,
                 not energy).

Energy on the CPU is an ESTIMATE (watts x process CPU seconds), like the energy benchmark's.

    python bench/distill_bench.py --quick          # smoke test, ~1 min on 2 cores, figures meaningless
    python bench/distill_bench.py                  # 5 seeds x 2 tasks x (teacher + 4 students)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/energy_bench.py, bench/stats.py

import energy_bench  # noqa: E402
import stats  # noqa: E402

OUT_DIR = energy_bench.OUT_DIR
DEFAULT_SEEDS = 5
VARIANTS = ("scratch", "distill", "cached_build", "cached")
DISTILLED = ("distill", "cached_build", "cached")


@dataclass(frozen=True)
class DistillTask:
    student: energy_bench.Task  # overrides, target and epochs: the energy benchmark's own task
    teacher: tuple[str, ...]  # overrides that make the student's net a wider teacher


TASKS: dict[str, DistillTask] = {
    "mnist1d+cnn1d": DistillTask(energy_bench.TASKS["mnist1d+cnn1d"], ("model.net.channels=[128,128,128]",)),
    "tabular+mlp": DistillTask(energy_bench.TASKS["tabular+mlp"], ("model.net.hidden=[1024,1024]",)),
}


def train_kept(overrides: Sequence[str], run_dir: Path) -> dict[str, Any]:
    """Train once into run_dir and keep it (a teacher: its checkpoints, config and summary stay)."""
    from omegaconf import OmegaConf

    from wattwise.train import train
    from wattwise.utils.compose import compose_run_config

    cfg = compose_run_config(list(overrides), run_dir)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what a train.py run leaves behind
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        train(cfg)
    return json.loads((run_dir / "summary.json").read_text())


def variant_overrides(variant: str, teacher_dir: Path, cache_dir: Path) -> list[str]:
    if variant == "scratch":
        return ["optim=[]"]
    out = ["+optim=distill", f"callbacks.distill.teacher={teacher_dir}"]
    if variant.startswith("cached"):
        out += ["callbacks.distill.cache=true", f"callbacks.distill.cache_dir={cache_dir}"]
    return out


def order(seed: int) -> list[str]:
    """Variants rotated per seed; the cached pair stays in order (the first builds, the second reuses)."""
    units = [["scratch"], ["distill"], ["cached_build", "cached"]]
    k = seed % len(units)
    return [v for unit in [*units[k:], *units[:k]] for v in unit]


# ---- summaries ---------------------------------------------------------------------------------
def break_even(one_off_J: float | None, scratch_ett: float | None, variant_ett: float | None) -> float | None:
    """Student runs until the one-off cost is repaid (see the module doc): inf = never, None = n.a."""
    if scratch_ett is None or one_off_J is None:
        return None
    if variant_ett is None or variant_ett >= scratch_ett:
        return math.inf
    return one_off_J / (scratch_ett - variant_ett)


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per task and variant (and one for the teacher), medians with intervals over seeds."""
    rows = []
    for task in dict.fromkeys(r["task"] for r in records):
        mine = [r for r in records if r["task"] == task and r.get("status") == "completed"]

        def of(variant: str, key: str, runs: list[dict[str, Any]] = mine) -> dict[int, Any]:
            return {r["seed"]: r.get(key) for r in runs if r["variant"] == variant}

        teacher_J = of("teacher", "energy/total_J")
        scratch_ett = of("scratch", "ett_J")
        for variant in ("teacher", *VARIANTS):
            runs = [r for r in mine if r["variant"] == variant]
            ett = of(variant, "ett_J")
            row: dict[str, Any] = {
                "task": task,
                "variant": variant,
                "ok": len(runs),
                "failed": sum(r["task"] == task and r["variant"] == variant for r in records) - len(runs),
                "acc": stats.median_ci([r.get("test/acc") for r in runs]),
                "energy_J": stats.median_ci([r.get("energy/total_J") for r in runs]),
                "ett_J": stats.median_ci(list(ett.values()), none_is_inf=True),
                "teacher_J": stats.median_ci([r.get("distill/teacher_J") for r in runs]),
                "forwards": stats.median_ci([r.get("distill/teacher_forwards") for r in runs]),
            }
            if variant != "teacher":
                row["ett_x"] = stats.ratio_ci(ett, scratch_ett, none_is_inf=True)
            if variant in ("distill", "cached"):
                even = []
                for seed, v_ett in ett.items():
                    cache_J = next((r.get("distill/cache_build_J") for r in runs if r["seed"] == seed), None)
                    one_off = teacher_J.get(seed)
                    if one_off is not None and variant == "cached":
                        one_off += cache_J or 0.0
                    even.append(break_even(one_off, scratch_ett.get(seed), v_ett))
                row["break_even"] = stats.median_ci(even)
                row["never"] = sum(e is not None and math.isinf(e) for e in even)
                row["na"] = sum(e is None for e in even)
            rows.append(row)
    return rows


COLUMNS = [
    ("ok", "runs"),
    ("acc", "test acc % [95% CI]"),
    ("energy_J", "fit J [CI]"),
    ("ett_J", "J to target [CI]"),
    ("ett_x", "to target x scratch"),
    ("teacher_J", "teacher J in run"),
    ("forwards", "teacher forwards"),
    ("break_even", "break-even runs [CI]"),
]


def _cell(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if key == "ok":
        return f"{v}/{v + row['failed']}"
    if key == "acc":
        return v.fmt("{:.1f}", 100)
    if key == "ett_x":
        return v.fmt("{:.2f}")
    if key == "forwards":
        return v.fmt("{:.0f}")
    text = v.fmt("{:.3g}" if key in ("teacher_J", "break_even") else "{:.1f}")
    if key == "ett_J" and v.not_reached:
        text += f" ({v.not_reached} not reached)"
    if key == "break_even" and (row.get("never") or row.get("na")):
        text += f" (never: {row['never']}, n.a.: {row['na']})"
    return text


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| task | variant | " + " | ".join(h for _, h in COLUMNS) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 2)
    body = [
        f"| {r['task']} | {r['variant']} | " + " | ".join(_cell(r, k) for k, _ in COLUMNS) + " |"
        for r in rows
    ]
    return "\n".join([head, rule, *body])


# ---- the run -----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 1 seed, 2 epochs of 3 batches, tiny data"
    )
    p.add_argument("--seeds", type=int, default=None, help=f"seeds (default {DEFAULT_SEEDS}; quick 1)")
    p.add_argument("--tasks", default=None, help=f"comma list of {list(TASKS)}")
    p.add_argument("--energy", default="estimate", choices=["estimate", "auto"])
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument(
        "--out", type=Path, default=None, help="markdown report (default bench/out/distill_bench-*.md)"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    energy_bench.quiet()
    threads = energy_bench.pin_threads(args.threads)
    seeds = args.seeds or (1 if args.quick else DEFAULT_SEEDS)
    names = list(energy_bench.choose_tasks(args.tasks, TASKS, "distill_bench"))
    extra = [
        f"energy={args.energy}",
        *energy_bench.COMMON,
        "trainer.precision=32-true",
        *(energy_bench.QUICK if args.quick else []),
    ]
    total = seeds * len(names) * (1 + len(VARIANTS))
    print(
        f"distill bench: {len(names)} tasks x {seeds} seeds x (teacher + {len(VARIANTS)} students)"
        f" = {total} runs"
    )
    print(f"  threads: {threads}")
    out = args.out or OUT_DIR / f"distill_bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs_file = out.with_suffix(".runs.jsonl")
    records: list[dict[str, Any]] = []
    started = time.perf_counter()

    def record(task: str, variant: str, seed: int, s: dict[str, Any], target: float) -> None:
        ett_J, ett_epoch = stats.energy_to_target(s.get("curve", []), target)
        r = {"task": task, "variant": variant, "seed": seed, **s, "ett_J": ett_J, "ett_epoch": ett_epoch}
        records.append(r)
        with runs_file.open("a") as f:
            f.write(json.dumps(r, default=str) + "\n")
        if s.get("status") == "completed":
            energy, acc = s.get("energy/total_J") or float("nan"), 100 * (s.get("test/acc") or 0)
            fwd = s.get("distill/teacher_forwards", 0)
            teacher = f"teacher {s.get('distill/teacher_J') or 0:.2f} J / {fwd} fwd"
            reached = f"target at {ett_J:.1f} J" if ett_J is not None else "target NOT reached"
            detail = f"{energy:.1f} J  acc {acc:.1f}%  {teacher}  {reached}"
        else:
            detail = f"FAILED: {s.get('error')}"
        print(f"  [{len(records)}/{total}] seed {seed} {task:<14} {variant:<12} {detail}", flush=True)

    with tempfile.TemporaryDirectory(prefix="wattwise-distill-bench-") as work:
        for seed in range(seeds):
            for task in names:
                t = TASKS[task]
                base = [
                    *t.student.overrides,
                    *([] if args.quick else [f"trainer.max_epochs={t.student.epochs}"]),
                    f"seed={seed}",
                    *extra,
                ]
                teacher_dir = Path(work) / f"teacher-{task}-{seed}"
                try:
                    s = train_kept([*base, "optim=[]", *t.teacher], teacher_dir)
                except (Exception, SystemExit) as err:  # noqa: BLE001 - reported as a failed row
                    s = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
                s["curve"] = energy_bench.read_curve(teacher_dir)
                record(task, "teacher", seed, s, t.student.target)
                cache_dir = Path(work) / f"cache-{task}-{seed}"
                for variant in order(seed):
                    overrides = [*base, *variant_overrides(variant, teacher_dir, cache_dir)]
                    record(
                        task, variant, seed, energy_bench.run_once(overrides, Path(work)), t.student.target
                    )

    rows = summarise(records)
    sources = sorted({str(r.get("energy/source")) for r in records if r.get("energy/source")})
    label = (
        "an ESTIMATE (watts x process CPU seconds)"
        if "estimate" in sources
        else "measured: " + ", ".join(sources)
    )
    elapsed = time.perf_counter() - started
    text = "\n".join(
        [
            f"# Distill benchmark ({'quick: figures meaningless' if args.quick else f'{seeds} seeds'})",
            "",
            f"- machine: {energy_bench.machine()}; threads pinned: {threads}",
            f"- energy: {label}; took {elapsed / 60:.1f} min",
            "- tasks (student / teacher): "
            + "; ".join(
                f"{n}: {' '.join(TASKS[n].student.overrides)} / {' '.join(TASKS[n].teacher)}" for n in names
            ),
            "- targets (validation accuracy): "
            + ", ".join(f"{n} {100 * TASKS[n].student.target:.0f}%" for n in names),
            "- break-even: teacher training (+ cache build, cached) / (scratch's J to target - the "
            "variant's); inf = never pays, n.a. = scratch never reached the target",
            "",
            markdown_table(rows),
            "",
        ]
    )
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"runs": records}, default=str, indent=1))
    print("\n" + text)
    print(f"report: {out}")
    return out


if __name__ == "__main__":
    main()
