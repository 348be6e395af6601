"""What the teacher costs a run, and after how many student runs distillation pays for itself.

Measured, in this run, by the run's own energy meter:
- `teacher_J`: the teacher's forward passes during training (uncached), or building the logit
  cache when this run built it; a cached run that found its cache pays ~0 here.
Read, not measured here:
- `teacher_train_J`: the teacher's own training, from its run's `summary.json` (`energy/total_J`);
- `baseline_J`: a from-scratch run of the same student, from the `summary.json` given as
  `callbacks.distill.baseline` (the user runs it; the benchmark does for its tasks);
- `cache_build_J`: what building the cache cost, stored in the cache file by the run that built it.

The break-even, in student runs:

    one_off  = teacher_train_J + cache_build_J            (paid once, whoever paid it)
    per_run  = this run's energy/total_J - cache_build_J  (if this run built the cache; else all of it)
    saving   = baseline_J - per_run
    break_even_runs = one_off / saving                     (only when saving > 0; else never)

It compares runs *as configured* (the same epochs, or early stopping's own stop): it is only a
saving if the distilled student is at least as accurate, which is why the summary also carries
both runs' accuracy. A teacher trained for its own sake is a sunk cost: set
`callbacks.distill.count_teacher_training=false` and one_off is the cache alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wattwise.utils.errors import ConfigError

BASIS_WINDOW = "window"  # a meter window around each teacher forward (estimate, RAPL)
BASIS_TIME_SHARE = "time share"  # teacher seconds x the fit's average power (GPU counters)


def read_baseline(spec: str | None) -> dict[str, Any] | None:
    """The from-scratch student's summary.json (its run dir or the file), or one line saying why not."""
    if spec is None:
        return None
    path = Path(str(spec)).expanduser()
    path = path / "summary.json" if path.is_dir() else path
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"callbacks.distill.baseline={spec}: cannot read a summary.json there ({err})"
        ) from None
    if not isinstance(summary, dict) or summary.get("energy/total_J") is None:
        raise ConfigError(f"callbacks.distill.baseline={spec}: its summary.json has no energy/total_J")
    return summary


def break_even_runs(
    baseline_J: float | None,
    run_J: float | None,
    teacher_train_J: float | None,
    cache_build_J: float | None,
    built_here: bool,
) -> tuple[float | None, str]:
    """(student runs until distillation pays off, or None; one line saying how it came out)."""
    if baseline_J is None or run_J is None:
        return None, "no baseline: give callbacks.distill.baseline=<a from-scratch run of this student>"
    cache_J = cache_build_J or 0.0
    one_off = (teacher_train_J or 0.0) + cache_J
    per_run = run_J - (cache_J if built_here else 0.0)
    saving = baseline_J - per_run
    if saving <= 0:
        return None, (
            f"never: a distilled run costs {per_run:.1f} J, the from-scratch student {baseline_J:.1f} J"
        )
    runs = one_off / saving
    parts = "teacher training + cache" if teacher_train_J is not None else "cache only"
    return runs, f"{runs:.1f} runs: one-off {one_off:.1f} J ({parts}) / saving {saving:.1f} J per run"
