"""Compare the runs of a sweep: accuracy against energy, with the Pareto front marked.

    python -m wattwise.compare outputs/multirun/2026-11-26/15-27-49
    python -m wattwise.compare outputs/optuna/energy_pareto --metric val/acc
    make compare SWEEP=outputs/multirun/2026-11-26/15-27-49

Reads every `summary.json` under the folder, at any depth (a multirun's job dirs, all
sessions of an Optuna study, or any folder of runs), and writes

- a table to the terminal: status, options, changed overrides, accuracy, energy and
  its source, energy per training sample, fit time; `*` marks the Pareto front;
- `compare.csv`: the same rows with every metric of every summary;
- `compare.png`: accuracy against energy, the Pareto front drawn as a line.

The front holds the completed runs that no other run beats on both counts (at least
as accurate for no more energy, better on one). Failed and interrupted runs are listed,
with their error, and never on the front. A job dir with no summary (the job stopped
before training, e.g. on a config error) is listed as failed too.

Energy sources are never mixed silently: the source of each row is shown (`ESTIMATE`
or the hardware counter), and when a folder holds several sources the front is computed
within each source and a warning says so. Jobs that ran in parallel on one machine
(joblib launcher) share its power; their rows are marked and a warning says so.

Offline: reads only files; W&B is not needed. Exit code 0, or 2 with a one-line error.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"
FAILED_STATUSES = ("failed", "interrupted", "no summary")


@dataclass
class Run:
    """One row of the comparison, read from a run dir's summary.json."""

    name: str  # the run dir relative to the compared folder, e.g. "3" or "2026-11-26_15-37-47_6473/0"
    status: str
    optim: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    accuracy: float | None = None
    energy_J: float | None = None
    energy_source: str = "off"
    J_per_sample: float | None = None
    time_s: float | None = None
    error: str | None = None
    parallel_jobs: int = 1
    metrics: dict[str, Any] = field(default_factory=dict)
    pareto: bool = False

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def optim_label(self) -> str:
        return "+".join(self.optim) if self.optim else "none"


class CompareError(Exception):
    """Nothing to compare (no folder, no summaries); reported in one line."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _job_dir_without_summary(path: Path) -> bool:
    return (path / ".hydra" / "overrides.yaml").is_file() and not (path / SUMMARY_FILE).is_file()


def _read_overrides(job_dir: Path) -> list[str]:
    try:
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    except Exception:  # noqa: BLE001 - a damaged file only loses the label
        return []


def _optim_from_overrides(overrides: Sequence[str]) -> list[str]:
    chosen: list[str] = []
    for text in overrides:
        key, _, value = text.partition("=")
        if key.lstrip("+~") == "optim":
            value = value.strip()
            inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
            chosen += [v.strip() for v in inner.split(",") if v.strip()]
    return chosen


def load_runs(folder: str | Path, metric: str = "test/acc", energy_key: str = "energy/total_J") -> list[Run]:
    """Every run under `folder`: one per summary.json, plus job dirs that never wrote one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CompareError(
            f"{folder} is not a directory (pass a sweep dir, e.g. outputs/multirun/<date>/<time>)"
        )
    runs: list[Run] = []
    for path in sorted(folder.rglob(SUMMARY_FILE)):
        try:
            s = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            runs.append(
                Run(name=_rel(path.parent, folder), status="failed", error=f"unreadable summary: {err}")
            )
            continue
        launcher = s.get("launcher") or {}
        runs.append(
            Run(
                name=_rel(path.parent, folder),
                status=str(s.get("status", "?")),
                optim=[str(o) for o in s.get("optim") or []],
                overrides=[str(o) for o in s.get("overrides") or []],
                accuracy=_number(s.get(metric)),
                energy_J=_number(s.get(energy_key)),
                energy_source=str(s.get("energy/source") or s.get("energy_source") or "off"),
                J_per_sample=_number(s.get("energy/J_per_sample")),
                time_s=_number(s.get("time/train_s")),
                error=s.get("error"),
                parallel_jobs=int(launcher.get("parallel_jobs") or 1),
                metrics={k: v for k, v in s.items() if "/" in k},
            )
        )
    for hydra_dir in sorted(folder.rglob(".hydra")):
        job = hydra_dir.parent
        if _job_dir_without_summary(job):
            overrides = _read_overrides(job)
            runs.append(
                Run(
                    name=_rel(job, folder),
                    status="no summary",
                    optim=_optim_from_overrides(overrides),
                    overrides=overrides,
                    error=f"no {SUMMARY_FILE}: the job stopped before training (see {job}/train.log)",
                )
            )
    if not runs:
        raise CompareError(
            f"no {SUMMARY_FILE} under {folder}: a sweep dir holds one per job "
            "(e.g. outputs/multirun/<date>/<time>/0/summary.json); did the sweep run?"
        )
    mark_pareto(runs)
    return runs


def _rel(path: Path, folder: Path) -> str:
    rel = path.relative_to(folder).as_posix()
    return rel if rel != "." else path.name


def pareto_mask(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (accuracy, energy) points: True where no other point is at least as accurate for no more
    energy and strictly better on one of the two. Equal points are all on the front."""
    mask = []
    for i, (acc_i, e_i) in enumerate(points):
        dominated = any(
            acc_j >= acc_i and e_j <= e_i and (acc_j > acc_i or e_j < e_i)
            for j, (acc_j, e_j) in enumerate(points)
            if j != i
        )
        mask.append(not dominated)
    return mask


def mark_pareto(runs: Sequence[Run]) -> None:
    """Set `run.pareto` for completed runs with both figures, within each energy source."""
    for run in runs:
        run.pareto = False
    for source in sorted({r.energy_source for r in runs}):
        group = [
            r
            for r in runs
            if r.energy_source == source and r.completed and r.accuracy is not None and r.energy_J is not None
        ]
        for run, on_front in zip(group, pareto_mask([(r.accuracy, r.energy_J) for r in group])):
            run.pareto = on_front


def source_label(source: str) -> str:
    if source.startswith("zeus"):
        return f"measured ({source})"
    if source == "estimate":
        return "ESTIMATE"
    return source


def varying_overrides(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Per run, the overrides that not every run shares (the optim override is its own column)."""
    lists = {r.name: [o for o in r.overrides if o.partition("=")[0].lstrip("+~") != "optim"] for r in runs}
    common = set.intersection(*(set(v) for v in lists.values())) if len(lists) > 1 else set()
    return {name: [o for o in values if o not in common] for name, values in lists.items()}


def _short(text: str) -> str:
    """Long floats (Optuna's learning rates) to 3 significant digits, for display only."""
    return re.sub(r"\d+\.\d{4,}(?:e-?\d+)?", lambda m: f"{float(m.group()):.3g}", text)


def _label(override: str) -> str:
    """A short plot label: `model.optimizer.lr=0.0011155` -> `lr=0.00112` (the table keeps full names)."""
    key, sep, value = override.partition("=")
    return _short(f"{key.rsplit('.', 1)[-1]}{sep}{value}")


def _midpoint(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    lo, hi = min(values), max(values)
    return math.sqrt(lo * hi) if lo > 0 and hi / lo > 20 else (lo + hi) / 2


def _sorted(runs: Sequence[Run]) -> list[Run]:
    """Completed runs by energy (lowest first), then the rest."""
    return sorted(
        runs,
        key=lambda r: (
            not r.completed,
            r.energy_J if r.energy_J is not None else math.inf,
            -(r.accuracy or 0.0),
            r.name,
        ),
    )


def _warnings(runs: Sequence[Run]) -> list[str]:
    notes = []
    sources = sorted({r.energy_source for r in runs if r.energy_J is not None})
    if len(sources) > 1:
        counts = ", ".join(f"{s}: {sum(r.energy_source == s for r in runs)}" for s in sources)
        notes.append(
            f"WARNING: energy comes from different sources ({counts}); estimates and measurements do "
            "not compare, so the Pareto front is computed within each source."
        )
    if any(r.parallel_jobs > 1 for r in runs):
        notes.append(
            "WARNING: runs marked 'shared' ran in parallel on one machine (joblib launcher): each "
            "energy figure includes the other jobs' draw. Rerun with hydra/launcher=basic to compare energy."
        )
    return notes


def format_table(runs: Sequence[Run], metric: str = "test/acc", energy_key: str = "energy/total_J") -> str:
    """The terminal table (see the module docstring)."""
    varying = varying_overrides(runs)
    header = [
        "front",
        "status",
        "optim",
        "overrides",
        metric,
        energy_key,
        "source",
        "mJ/sample",
        "fit s",
        "run",
    ]
    rows = []
    for r in _sorted(runs):
        energy = "-" if r.energy_J is None else f"{r.energy_J:.4g} J"
        if r.parallel_jobs > 1 and r.energy_J is not None:
            energy += " shared"
        rows.append(
            [
                "*" if r.pareto else "",
                r.status,
                r.optim_label,
                _short(" ".join(varying[r.name])) or "-",
                "-"
                if r.accuracy is None
                else f"{100 * r.accuracy:.2f} %"
                if "acc" in metric
                else f"{r.accuracy:.4g}",
                energy,
                source_label(r.energy_source) if r.energy_J is not None else "-",
                "-" if r.J_per_sample is None else f"{1e3 * r.J_per_sample:.3g}",
                "-" if r.time_s is None else f"{r.time_s:.1f}",
                r.name,
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    right = {4, 5, 7, 8}
    lines = []
    n_failed = sum(r.status in FAILED_STATUSES for r in runs)
    lines.append(
        f"{len(runs)} runs: {sum(r.completed for r in runs)} completed, {n_failed} failed or interrupted"
    )
    for row in [header, *rows]:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if row is header:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(
        f"* Pareto front: no other completed run has a higher {metric} for no more {energy_key} "
        "(computed among runs with the same energy source)."
    )
    failed = [r for r in _sorted(runs) if not r.completed]
    if failed:
        lines.append("Not completed:")
        lines += [
            f"  run {r.name} [{r.status}] ({r.optim_label}): {r.error or 'no error recorded'}" for r in failed
        ]
    lines += _warnings(runs)
    return "\n".join(lines)


def write_csv(
    runs: Sequence[Run], path: str | Path, metric: str = "test/acc", energy_key: str = "energy/total_J"
) -> Path:
    """One row per run: the table's columns, then every metric found in any summary."""
    path = Path(path)
    extra = sorted({k for r in runs for k in r.metrics} - {metric, energy_key})
    fields = [
        "run",
        "status",
        "pareto",
        "optim",
        "overrides",
        metric,
        energy_key,
        "energy_source",
        "parallel_jobs",
        "error",
        *extra,
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in _sorted(runs):
            writer.writerow(
                {
                    **{k: r.metrics.get(k) for k in extra},
                    "run": r.name,
                    "status": r.status,
                    "pareto": int(r.pareto),
                    "optim": r.optim_label,
                    "overrides": " ".join(r.overrides),
                    metric: r.accuracy,
                    energy_key: r.energy_J,
                    "energy_source": r.energy_source,
                    "parallel_jobs": r.parallel_jobs,
                    "error": r.error or "",
                }
            )
    return path


def plot(
    runs: Sequence[Run],
    path: str | Path,
    metric: str = "test/acc",
    energy_key: str = "energy/total_J",
    title: str | None = None,
) -> Path:
    """Accuracy against energy; the front as a line, one marker shape per energy source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    pct = "acc" in metric
    scale = 100.0 if pct else 1.0
    varying = varying_overrides(runs)
    shown = [r for r in runs if r.completed and r.accuracy is not None and r.energy_J is not None]
    markers = ["o", "s", "^", "D", "v"]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=100)
    annotate_all = len(shown) <= 6  # more points: label the front only (the table names them all)
    x_mid = _midpoint([r.energy_J for r in shown])
    for k, source in enumerate(sorted({r.energy_source for r in shown})):
        group = [r for r in shown if r.energy_source == source]
        marker = markers[k % len(markers)]
        label = source_label(source)
        rest = [r for r in group if not r.pareto]
        front = sorted((r for r in group if r.pareto), key=lambda r: r.energy_J)
        if rest:
            ax.scatter(
                [r.energy_J for r in rest],
                [scale * r.accuracy for r in rest],
                marker=marker,
                s=40,
                facecolors="none",
                edgecolors="0.45",
                label=f"run, energy {label}",
            )
        if front:
            ax.plot(
                [r.energy_J for r in front],
                [scale * r.accuracy for r in front],
                marker=marker,
                markersize=7,
                color=f"C{k}",
                drawstyle="steps-post",
                label=f"Pareto front, energy {label}",
            )
        labels: dict[tuple[float, float], list[str]] = {}  # runs on the same spot share one label
        for r in group:
            if annotate_all or r.pareto:
                words = [r.optim_label if r.optim else "", *(_label(o) for o in varying[r.name])]
                labels.setdefault((r.energy_J, scale * r.accuracy), []).append(
                    " ".join(filter(None, words)) or r.name
                )
        for (x, y), texts in labels.items():
            on_front = any(r.pareto and (r.energy_J, scale * r.accuracy) == (x, y) for r in group)
            left = x > x_mid  # labels of the right half point left, so they stay inside the axes
            note = ax.annotate(
                " | ".join(texts),
                (x, y),
                textcoords="offset points",
                xytext=(-6 if left else 6, 4),
                ha="right" if left else "left",
                fontsize=7,
                color="0.15" if on_front else "0.45",
            )
            note.set_in_layout(False)
    if shown:
        energies = [r.energy_J for r in shown]
        if min(energies) > 0 and max(energies) / min(energies) > 20:
            ax.set_xscale("log")
    failed = [r for r in runs if not r.completed]
    if failed:
        names = ", ".join(f"run {r.name}" for r in failed[:4]) + (" ..." if len(failed) > 4 else "")
        ax.text(
            0.99,
            0.02,
            f"not plotted: {len(failed)} failed/interrupted ({names})",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            color="C3",
        )
    if any(r.parallel_jobs > 1 for r in shown):
        ax.text(
            0.01,
            0.98,
            "energy shared by parallel jobs",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            color="C3",
        )
    ax.margins(x=0.15, y=0.12)
    ax.set_xlabel(f"{energy_key} (J)")
    ax.set_ylabel(f"{metric} (%)" if pct else metric)
    ax.set_title(title or f"{metric} vs {energy_key}", fontsize=10)
    ax.grid(True, alpha=0.3)
    if shown:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def compare(
    folder: str | Path,
    metric: str = "test/acc",
    energy_key: str = "energy/total_J",
    out: str | Path | None = None,
    make_plot: bool = True,
) -> dict[str, Any]:
    """Load, print-ready table, CSV and PNG; returns {"runs", "table", "csv", "png"}."""
    folder = Path(folder)
    runs = load_runs(folder, metric, energy_key)
    out_dir = Path(out) if out else folder
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"runs": runs, "table": format_table(runs, metric, energy_key)}
    result["csv"] = write_csv(runs, out_dir / "compare.csv", metric, energy_key)
    result["png"] = None
    if make_plot:
        title = f"{folder.resolve().name}: {metric} vs {energy_key}"
        result["png"] = plot(runs, out_dir / "compare.png", metric, energy_key, title)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wattwise.compare",
        description="Compare a sweep's runs (their summary.json files): table, CSV and a Pareto plot.",
    )
    parser.add_argument("folder", help="a sweep dir (outputs/multirun/<date>/<time>) or any folder of runs")
    parser.add_argument(
        "--metric", default="test/acc", help="accuracy metric to maximize (default: test/acc)"
    )
    parser.add_argument(
        "--energy", default="energy/total_J", help="energy metric to minimize (default: energy/total_J)"
    )
    parser.add_argument(
        "--out", default=None, help="where to write compare.csv and compare.png (default: the folder)"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    try:
        result = compare(args.folder, args.metric, args.energy, args.out, make_plot=not args.no_plot)
    except CompareError as err:
        print(f"wattwise.compare: error: {err}", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"\nCSV:  {result['csv']}")
    if result["png"]:
        print(f"plot: {result['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
