"""compare.png: the compared metric against energy, each variant at its medians, the Pareto front through
them. An accuracy is drawn in %, any other metric (a loss, an error) as is, labelled by its name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from wattwise.compare.metric import Metric, as_metric
from wattwise.compare.runs import Run, source_label
from wattwise.compare.variants import Variant

MARKERS = ["o", "s", "^", "D", "v"]


def _midpoint(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    lo, hi = min(values), max(values)
    return math.sqrt(lo * hi) if lo > 0 and hi / lo > 20 else (lo + hi) / 2


def _draw_source(ax, k: int, source: str, group: list[Variant], scale: float) -> None:  # noqa: ANN001
    marker, label = MARKERS[k % len(MARKERS)], source_label(source)
    runs = [r for v in group for r in v.compared if r.value is not None and r.energy_J is not None]
    if runs:
        ax.scatter(
            [r.energy_J for r in runs],
            [scale * r.value for r in runs],
            marker=marker,
            s=14,
            color="0.7",
            label=f"single runs, energy {label}",
            zorder=1,
        )
    for v in group:
        lo, hi = v.energy_range or (v.energy_J, v.energy_J)
        ax.errorbar(
            [v.energy_J],
            [scale * v.value],
            xerr=[[v.energy_J - lo], [hi - v.energy_J]],
            fmt=marker,
            color=f"C{k}" if v.pareto else "0.35",
            markersize=6,
            capsize=3,
            zorder=3,
        )
    front = sorted((v for v in group if v.pareto), key=lambda v: v.energy_J)
    if front:
        ax.plot(
            [v.energy_J for v in front],
            [scale * v.value for v in front],
            color=f"C{k}",
            drawstyle="steps-post",
            label=f"Pareto front of medians, energy {label}",
            zorder=2,
        )


def _annotate(ax, shown: Sequence[Variant], scale: float) -> None:  # noqa: ANN001
    x_mid = _midpoint([v.energy_J for v in shown])
    annotate_all = len(shown) <= 12
    for v in shown:
        if not (annotate_all or v.pareto):
            continue
        left = v.energy_J > x_mid  # labels of the right half point left, so they stay inside the axes
        text = v.label + (f" ({v.verdict})" if v.verdict not in ("", "baseline") else "")
        note = ax.annotate(
            text,
            (v.energy_J, scale * v.value),
            textcoords="offset points",
            xytext=(-6 if left else 6, 4),
            ha="right" if left else "left",
            fontsize=7,
            color="0.15" if v.pareto else "0.45",
        )
        note.set_in_layout(False)


def _notes(ax, runs: Sequence[Run], variants: Sequence[Variant]) -> None:  # noqa: ANN001
    left_out = [v.label for v in variants if not v.compared]
    if left_out:
        names = ", ".join(left_out[:4]) + (" ..." if len(left_out) > 4 else "")
        ax.text(
            0.99,
            0.02,
            f"not plotted (skipped or failed): {names}",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            color="C3",
        )
    if any(r.parallel_jobs > 1 for r in runs if r.compared):
        ax.text(
            0.01,
            0.98,
            "energy shared by parallel jobs",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            color="C3",
        )


def plot(
    runs: Sequence[Run],
    variants: Sequence[Variant],
    path: str | Path,
    metric: str | Metric = "test/acc",
    energy_key: str = "energy/total_J",
    title: str | None = None,
) -> Path:
    """Variants at their medians (bars: the range of their runs), single runs in grey, the front as a line
    (up and to the left is better for a metric to maximise, down and to the left for one to minimise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    m = as_metric(metric)
    metric, pct = m.name, m.is_accuracy
    scale = 100.0 if pct else 1.0
    shown = [v for v in variants if v.compared and v.value is not None and v.energy_J is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=100)
    for k, source in enumerate(sorted({v.energy_source for v in shown})):
        _draw_source(ax, k, source, [v for v in shown if v.energy_source == source], scale)
    _annotate(ax, shown, scale)
    energies = [v.energy_J for v in shown]
    if energies and min(energies) > 0 and max(energies) / min(energies) > 20:
        ax.set_xscale("log")
    _notes(ax, runs, variants)
    ax.margins(x=0.15, y=0.12)
    ax.set_xlabel(f"{energy_key} (J), median over seeds; bars: range of the runs")
    better = "" if m.maximize else " (lower is better)"
    ax.set_ylabel((f"{metric} (%), median" if pct else f"{metric}, median") + better)
    ax.set_title(title or f"{metric} vs {energy_key}", fontsize=10)
    ax.grid(True, alpha=0.3)
    if shown:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
