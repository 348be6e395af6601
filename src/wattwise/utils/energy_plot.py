"""The per-run figure: the monitored metric (validation accuracy for the bundled classifier) against the
energy spent so far (and its carbon), per epoch. An accuracy is drawn in %, any other metric as is."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wattwise.utils.metric_names import is_accuracy

ENERGY_PLOT_FILE = "accuracy_vs_energy.png"


def plot_accuracy_vs_energy(
    cumulative_J: Sequence[float],
    accuracy: Sequence[float | None],
    gCO2_per_J: float,
    path: str | Path,
    title: str,
    energy_label: str,
    forecast: tuple[float, int] | None = None,
    metric: str = "val/acc",
) -> Path:
    """One point per epoch (joules at the devices, cumulative; `metric`'s value, an accuracy in %), grams
    CO2e on the top axis; `forecast` (total J, after how many epochs) marks where the early forecast said
    the fit would end. (`accuracy`: the metric's values, by the name it had when it was always val/acc.)"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pct = is_accuracy(metric)
    pts = [(j, 100 * a if pct else a) for j, a in zip(cumulative_J, accuracy) if a is not None]
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=100)
    if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2)
        last = f"{ys[-1]:.1f} %" if pct else f"{ys[-1]:.4g}"
        ax.annotate(last, (xs[-1], ys[-1]), textcoords="offset points", xytext=(-30, -14))
    if forecast is not None:
        ax.axvline(forecast[0], color="0.5", linestyle="--", linewidth=1)
        ax.annotate(
            f"forecast after epoch {forecast[1]}",
            (forecast[0], 0.04),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            color="0.4",
            xytext=(-9, 0),
            textcoords="offset points",
        )
    ax.set_xlabel(f"energy so far, J ({energy_label})")
    ax.set_ylabel("validation accuracy, %" if metric == "val/acc" else f"{metric}, %" if pct else metric)
    ax.grid(True, alpha=0.3)
    if gCO2_per_J > 0:
        top = ax.secondary_xaxis("top", functions=(lambda j: j * gCO2_per_J, lambda g: g / gCO2_per_J))
        top.set_xlabel("g CO2e so far")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
