"""The standard energy benchmark (`make bench`): energy to a fixed target accuracy, and energy of the
run as configured, over repeated seeds, for the baseline, Lightning's own tools, each energy method
alone and each recipe (green), on three MNIST-1D tasks. See docs/bench.md.

    python bench/energy_bench.py                 # the full run: 5 seeds, ~30-45 min on 2 CPU cores
    python bench/energy_bench.py --quick         # CI smoke test (1 seed, a few batches, tiny data)
    python bench/energy_bench.py --seeds 10 --tasks mnist1d+cnn1d --energy auto

The shape follows MLPerf Training: a fixed quality target per task (TASKS below, never tuned per
variant), the energy spent until validation accuracy first reaches it, repeated over seeds. Each
run also reports the energy of the whole run as configured (its epochs, its early stopping) and
its final test accuracy. Variants of one seed share the seed and are compared *paired*
(variant / baseline of the same seed); medians come with 95% bootstrap intervals (bench/stats.py).
Variants run interleaved, the order rotated by one per seed, so drift of the machine biases none.

Every run is `wattwise.train.train(cfg)` on the package's configs, composed in this process with
`logger=csv`; the per-epoch record (val/acc, cumulative energy/total_J) is read from the run's
metrics.csv, the final figures from its summary.json. Energy is `energy=estimate` by default
(reproducible on shared CPUs, labelled ESTIMATE everywhere); `--energy auto` reads a counter
(NVML/RAPL through Zeus) where there is one. torch's threads are pinned (`--threads`, default 1).

Outputs (bench/out/, git-ignored): a terminal table, energy_bench-<time>.md (report), .csv (one
row per task and variant), .json (every run, with its per-epoch record), -pareto.png and
-curves.png.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))  # this checkout's package, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/stats.py

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/wattwise-mpl")

import stats  # noqa: E402  (bench/stats.py)
from stats import rotated  # noqa: E402  (variants in the order of a seed: rotated by one per seed)


# ---- the benchmark's fixed definitions: change them here and in docs/bench.md, nowhere else -------
@dataclass(frozen=True)
class Task:
    overrides: tuple[str, ...]
    kind: str  # conv | sequence | tabular: the goals name tasks by kind
    target: float  # validation accuracy to reach; fixed for every variant
    epochs: int  # the baseline's (and every variant's configured) trainer.max_epochs
    paper: str  # the MNIST-1D paper's figure for this model family


# Targets: the MNIST-1D paper's figures (Greydanus & Steinbach: CNN 94%, GRU 91%, MLP 68%) minus a
# few points, and below what the bundled baseline reaches in `epochs` (checked on one seed before
# the first full run: CNN ~93-95% val, GRU ~93-94%, MLP ~58-60%: this MLP plateaus well below the
# paper's, so its target sits under its own plateau). Never tuned per variant.
TASKS: dict[str, Task] = {
    "mnist1d+cnn1d": Task(("data=mnist1d", "model=cnn1d"), "conv", 0.90, 20, "CNN 94%"),
    "mnist1d+gru": Task(("data=mnist1d", "model=gru"), "sequence", 0.87, 30, "GRU 91%"),
    "tabular+mlp": Task(("data=mnist1d_tabular", "model=mlp"), "tabular", 0.55, 20, "MLP 68%"),
}

# --gpu: one CUDA card, read by NVML through the energy monitor. Larger data (MNIST-1D with 40,000
# samples: 20,000 test) and the synthetic ResNet-18 throughput task; 2 seeds, fewer epochs, so the
# whole mode fits in about 5 minutes on an H100-class card (not yet timed on one: no card was lent
# when it was written). `power` is left out: the benchmark never changes a card's settings.
GPU_TASKS: dict[str, Task] = {
    "mnist1d-40k+cnn1d": Task(
        ("data=mnist1d", "data.num_samples=40000", "data.batch_size=256", "model=cnn1d"),
        "conv",
        0.90,
        10,
        "CNN 94%",
    ),
    "synthetic+resnet18": Task(
        (
            "data=synthetic",
            "data.num_samples=8192",
            "data.batch_size=256",
            "model=resnet18",
            "model.net.width=32",
        ),
        "conv",
        0.90,
        5,
        "-",
    ),
}
GPU_SEEDS = 2
GPU_IDLE_S = 10.0  # seconds the card is read while idle, before the runs


def measure_idle_W(gpu_index: int, seconds: float = GPU_IDLE_S) -> tuple[float | None, str]:
    """The card's idle draw (W) over `seconds` of sleep, read by the meter the runs use; reads only."""
    from wattwise.energy.meter import EnergyMeter

    meter = EnergyMeter("auto", gpu_index=gpu_index)
    if not meter.measured:
        return None, meter.source
    meter.begin("wattwise.idle")
    time.sleep(seconds)
    r = meter.end("wattwise.idle")
    return (r.gpu_J / r.time_s if r.gpu_J and r.time_s > 0 else None), meter.source


@dataclass(frozen=True)
class Goal:
    label: str
    who: str  # "green": the green recipe; "methods": every registered method alone
    metric: str  # energy_x | energy_vs_lightning | ett_x (paired median ratios)
    max_ratio: float
    kinds: tuple[str, ...] | None = None  # task kinds it applies to; None: every task
    max_acc_loss_pt: float | None = None  # and test accuracy may drop at most this much (points)


GOALS: list[Goal] = [
    Goal("green energy as configured <= 0.5x baseline, <= 0.5 pt lost", "green", "energy_x", 0.5, None, 0.5),
    Goal(
        "green energy as configured <= 0.8x lightning, <= 0.5 pt lost",
        "green",
        "energy_vs_lightning",
        0.8,
        None,
        0.5,
    ),
    Goal(
        "green energy to target <= 0.7x baseline (conv, sequence)",
        "green",
        "ett_x",
        0.7,
        ("conv", "sequence"),
    ),
    Goal("green energy to target <= 1.05x baseline (any task)", "green", "ett_x", 1.05),
    Goal("no method alone above 1.05x baseline (energy as configured)", "methods", "energy_x", 1.05),
]

DEFAULT_SEEDS = 5
# Plumbing that is the same for every variant: the csv logger (the per-epoch record), no progress bar.
# cpu_threads=null: train() leaves the threads as pin_threads() set them (--threads).
COMMON = [
    "logger=csv",
    "++callbacks.progress_bar=null",
    "++trainer.enable_progress_bar=false",
    "cpu_threads=null",
]
# --quick: tiny generated data (200 test samples) and a few batches; a smoke test, figures meaningless.
QUICK = [
    "trainer.max_epochs=2",
    "data.num_samples=400",
    "++trainer.limit_train_batches=3",
    "++trainer.limit_val_batches=2",
    "++trainer.limit_test_batches=2",
]
LIGHTNING_ES = [  # Lightning's EarlyStopping at its documented defaults (patience 3), on val/acc
    "+callbacks.lightning_es._target_=lightning.pytorch.callbacks.EarlyStopping",
    "+callbacks.lightning_es.monitor=val/acc",
    "+callbacks.lightning_es.mode=max",
    "+callbacks.lightning_es.patience=3",
]


# Settings a method takes in every benchmark run: no profile cache shared between runs, so every
# run pays its own search (a cache would let later seeds skip it and flatter the method).
BENCH_SETTINGS: dict[str, list[str]] = {
    "batch_size": ["callbacks.batch_size.profile_dir=null"],
    "power": ["callbacks.power.profile_dir=null"],
}


# Named settings of one method, benchmarked as a variant of their own (`--variants early_stop_forecast`).
SETTING_VARIANTS: dict[str, tuple[str, list[str]]] = {
    # early_stop's learning-curve forecast rule (issue 26) in place of diminishing returns
    "early_stop_forecast": (
        "early_stop",
        ["callbacks.early_stop.tolerance=0.5", "callbacks.early_stop.min_gain_fraction=null"],
    ),
}


# ---- variants ----------------------------------------------------------------------------------
def discover_methods() -> tuple[list[str], list[str]]:
    """(methods, recipes), from the registry (wattwise.methods.registry)."""
    from wattwise.methods import registry

    return registry.compared_method_names(), registry.recipe_names()


def default_variants() -> list[str]:
    methods, recipes = discover_methods()
    return ["baseline", "lightning", *methods, *recipes]


def native_bf16() -> bool:
    """Does the device the trainer will use run bfloat16 natively (amp's own hardware table)?"""
    from wattwise.methods.amp.callback import choose_precision, detect

    return choose_precision(*detect("auto")) == "bf16-mixed"


def variant_overrides(variant: str) -> list[str]:
    """The overrides that make a variant: what `python train.py ...` would be given."""
    if variant == "baseline":
        return ["optim=[]", "trainer.precision=32-true"]
    if variant == "lightning":  # what a user picks instead of wattwise: Lightning's own tools, defaults
        precision = "bf16-mixed" if native_bf16() else "32-true"
        return ["optim=[]", f"trainer.precision={precision}", *LIGHTNING_ES]
    if variant in SETTING_VARIANTS:
        method, settings = SETTING_VARIANTS[variant]
        return [*variant_overrides(method), *settings]
    # A method that does not apply here (power on a CPU) steps aside and is reported so.
    parts = variant.split("+")
    if len(parts) > 1:  # a combination of methods, e.g. data_cache+batch_size
        unknown = [p for p in parts if p not in methods()]
        if unknown:
            raise SystemExit(
                f"--variants: {variant}: {', '.join(unknown)} is not a method ({', '.join(methods())})"
            )
        skip = [f"callbacks.{p}.if_not_applicable=skip" for p in parts]
        return [f"+optim=[{','.join(parts)}]", *skip, *_bench_settings(parts)]
    if variant in methods():
        return [
            f"+optim={variant}",
            f"callbacks.{variant}.if_not_applicable=skip",
            *_bench_settings([variant]),
        ]
    from wattwise.methods import registry

    members = registry.recipe_members(variant) if variant in registry.recipe_names() else []
    return [f"+optim={variant}", *_bench_settings(members)]


def _bench_settings(names: Sequence[str]) -> list[str]:
    return [o for name in names for o in BENCH_SETTINGS.get(name, [])]


def methods() -> list[str]:
    return discover_methods()[0]


# ---- one run -----------------------------------------------------------------------------------
def quiet() -> None:
    """Keep the bench's output to its own progress lines and tables."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "wattwise", "zeus"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _num(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def read_curve(run_dir: Path) -> list[tuple[int, float | None, float | None]]:
    """The run's per-epoch record (epoch, val/acc, cumulative energy/total_J) from its csv logger.

    Lightning's CSVLogger writes validation and epoch-end figures on separate rows of the same
    epoch; the last value of each column within an epoch is kept."""
    files = sorted(Path(run_dir).glob("csv/**/metrics.csv"))
    by_epoch: dict[int, dict[str, float | None]] = {}
    for path in files:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                epoch = _num(row.get("epoch"))
                if epoch is None:
                    continue
                slot = by_epoch.setdefault(int(epoch), {"acc": None, "J": None})
                for key, col in (("acc", "val/acc"), ("J", "energy/total_J")):
                    v = _num(row.get(col))
                    if v is not None:
                        slot[key] = v
    return [(e, by_epoch[e]["acc"], by_epoch[e]["J"]) for e in sorted(by_epoch)]


def run_once(overrides: Sequence[str], work_dir: Path) -> dict[str, Any]:
    """Compose and train once in this process; the run's summary.json plus its per-epoch `curve`."""
    from wattwise.train import train
    from wattwise.utils.compose import compose_run_config

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        run_dir = Path(tmp)
        sink = io.StringIO()
        try:
            cfg = compose_run_config(list(overrides), run_dir)
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                train(cfg)
            s = json.loads((run_dir / "summary.json").read_text())
        except (Exception, SystemExit) as err:  # one failing variant must not sink the benchmark
            last = [line for line in sink.getvalue().splitlines() if line.strip()][-1:]
            path = run_dir / "summary.json"
            s = json.loads(path.read_text()) if path.exists() else {}
            s["status"] = "failed"
            s["error"] = s.get("error") or (last[0] if last else f"{type(err).__name__}: {err}")
        s["curve"] = read_curve(run_dir)
    return s


# ---- summaries ---------------------------------------------------------------------------------
def _by_seed(runs: list[dict[str, Any]], key: str) -> dict[int, float | None]:
    return {r["seed"]: r.get(key) for r in runs}


def summarise(records: list[dict[str, Any]], variants: Sequence[str]) -> list[dict[str, Any]]:
    """One row per task and variant: medians with intervals, paired ratios, counts of failed and
    not-reached runs. A failed run is counted as failed (no figures); a completed run that never
    reached the target is counted as not reached and enters energy-to-target figures as +inf."""
    rows = []
    for task in dict.fromkeys(r["task"] for r in records):
        ok_of = {
            v: [
                r
                for r in records
                if r["task"] == task and r["variant"] == v and r.get("status") == "completed"
            ]
            for v in variants
        }
        base, light = ok_of.get("baseline", []), ok_of.get("lightning", [])
        for variant in variants:
            runs = [r for r in records if r["task"] == task and r["variant"] == variant]
            ok = ok_of[variant]
            row: dict[str, Any] = {
                "task": task,
                "variant": variant,
                "runs": len(runs),
                "ok": len(ok),
                "failed": len(runs) - len(ok),
            }
            if not ok:
                row["error"] = next((r.get("error") for r in runs if r.get("error")), "not run")
                rows.append(row)
                continue
            row["not_reached"] = sum(r.get("ett_J") is None for r in ok)
            row["energy"] = stats.median_ci([r.get("energy/total_J") for r in ok])
            row["ett"] = stats.median_ci([r.get("ett_J") for r in ok], none_is_inf=True)
            row["test_acc"] = stats.median_ci([r.get("test/acc") for r in ok])
            row["J_per_sample"] = stats.median_ci([r.get("energy/J_per_sample") for r in ok])
            row["time_s"] = stats.median_ci([r.get("time/train_s") for r in ok])
            row["epochs"] = stats.median_ci([r.get("epochs") for r in ok])
            row["energy_x"] = stats.ratio_ci(_by_seed(ok, "energy/total_J"), _by_seed(base, "energy/total_J"))
            row["J_per_sample_x"] = stats.ratio_ci(
                _by_seed(ok, "energy/J_per_sample"), _by_seed(base, "energy/J_per_sample")
            )
            row["energy_vs_lightning"] = stats.ratio_ci(
                _by_seed(ok, "energy/total_J"), _by_seed(light, "energy/total_J")
            )
            row["ett_x"] = stats.ratio_ci(_by_seed(ok, "ett_J"), _by_seed(base, "ett_J"), none_is_inf=True)
            row["acc_delta_pt"] = stats.delta_ci(_by_seed(ok, "test/acc"), _by_seed(base, "test/acc"))
            row["source"] = ",".join(sorted({str(r.get("energy/source")) for r in ok}))
            rows.append(row)
    return rows


def verdicts(rows: list[dict[str, Any]], tasks: dict[str, Task], goals: Sequence[Goal] = GOALS) -> list[str]:
    """One line per goal and task it applies to: PASS / FAIL / n.a., with the figure and its interval.

    A goal is judged on the paired median; `(sure)` when the whole 95% interval meets it too."""
    methods, recipes = discover_methods()
    lines = []
    for goal in goals:
        who = ["green"] if goal.who == "green" else methods
        for task, t in tasks.items():
            if goal.kinds is not None and t.kind not in goal.kinds:
                continue
            for variant in who:
                row = next((r for r in rows if r["task"] == task and r["variant"] == variant), None)
                est = row.get(goal.metric) if row else None
                head = f"{goal.label} | {task} | {variant}"
                if est is None or est.value is None:
                    why = (
                        "not run" if row is None else ("all runs failed" if not row.get("ok") else "no pairs")
                    )
                    lines.append(f"n.a.  {head}: {why}")
                    continue
                ok = est.value <= goal.max_ratio
                sure = est.has_interval and est.high <= goal.max_ratio
                text = f"{est.fmt()}x (goal <= {goal.max_ratio}x)"
                if goal.max_acc_loss_pt is not None:
                    d = row.get("acc_delta_pt")
                    if d is None or d.value is None:
                        ok, sure = False, False
                        text += "; accuracy delta unknown"
                    else:
                        ok = ok and d.value >= -goal.max_acc_loss_pt
                        sure = sure and d.has_interval and d.low >= -goal.max_acc_loss_pt
                        text += f"; test acc {d.fmt('{:+.2f}')} pt (goal >= -{goal.max_acc_loss_pt})"
                if row.get("not_reached"):
                    text += f"; {row['not_reached']}/{row['ok']} runs never reached the target"
                lines.append(f"{'PASS' if ok else 'FAIL'}{' (sure)' if ok and sure else ''}  {head}: {text}")
    return lines


COLUMNS = [  # key, header, format, scale
    ("task", "task", "{}", 1),
    ("variant", "variant", "{}", 1),
    ("runs_ok", "runs ok", "{}", 1),
    ("not_reached", "not reached", "{}", 1),
    ("ett", "J to target", "{:.1f}", 1),
    ("ett_x", "to-target x", "{:.2f}", 1),
    ("energy", "J as configured", "{:.1f}", 1),
    ("energy_x", "energy x", "{:.2f}", 1),
    ("energy_vs_lightning", "vs lightning x", "{:.2f}", 1),
    ("test_acc", "test acc %", "{:.2f}", 100),
    ("acc_delta_pt", "Δacc pt", "{:+.2f}", 1),
    ("J_per_sample", "mJ/sample", "{:.3f}", 1000),
    ("J_per_sample_x", "J/sample x", "{:.2f}", 1),
    ("time_s", "time s", "{:.1f}", 1),
    ("epochs", "epochs", "{:.0f}", 1),
    ("source", "energy source", "{}", 1),
]


def _cell(row: dict[str, Any], key: str, fmt: str, scale: float) -> str:
    if key == "runs_ok":
        return f"{row['ok']}/{row['runs']}"
    value = row.get(key)
    if value is None:
        return ("failed: " + str(row.get("error", ""))[:60]) if key == "ett" and not row.get("ok") else ""
    if isinstance(value, stats.Estimate):
        if key == "ett" and value.value is not None and math.isinf(value.value):
            return "not reached" + (
                f" [{value.fmt(fmt, scale).split('[', 1)[1]}" if value.has_interval else ""
            )
        return value.fmt(fmt, scale)
    if key == "source" and "estimate" in str(value):
        return f"{value} (ESTIMATE)"
    return fmt.format(value)


def table_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[h for _, h, _, _ in COLUMNS]] + [[_cell(r, k, f, s) for k, _, f, s in COLUMNS] for r in rows]


def markdown_grid(cells: Sequence[Sequence[str]]) -> str:
    """A markdown table of `cells` (the first row is the header); the bench scripts' common form."""
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(c) + " |" for c in cells[1:]]
    return "\n".join(lines)


def terminal_grid(cells: Sequence[Sequence[str]]) -> str:
    """`cells` in aligned columns, the header ruled off, for the terminal."""
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    return markdown_grid(table_cells(rows))


def terminal_table(rows: list[dict[str, Any]]) -> str:
    return terminal_grid(table_cells(rows))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    fields = ["task", "variant", "runs", "ok", "failed", "not_reached", "source", "error"]
    est_keys = [k for k, *_ in COLUMNS if k not in fields and k != "runs_ok"]
    header = fields + [f"{k}_{p}" for k in est_keys for p in ("median", "low", "high", "n")]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            out = [r.get(k, "") for k in fields]
            for k in est_keys:
                e = r.get(k)
                out += [e.value, e.low, e.high, e.n] if isinstance(e, stats.Estimate) else ["", "", "", ""]
            w.writerow(["" if v is None else v for v in out])


# ---- figures -----------------------------------------------------------------------------------
def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _label(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(rows: list[dict[str, Any]], tasks: Sequence[str], path: Path, energy_label: str) -> None:
    """Per task: median test accuracy against median energy as configured, 95% intervals as bars,
    the Pareto front (nothing both cheaper and more accurate) joined and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        pts, names = [], []
        for r in rows:
            e, a = r.get("energy"), r.get("test_acc")
            if r["task"] != task or e is None or a is None or not _finite(e.value) or not _finite(a.value):
                continue
            x, y = e.value, 100 * a.value
            xerr = [[x - e.low], [e.high - x]] if e.has_interval else None
            yerr = [[y - 100 * a.low], [100 * a.high - y]] if a.has_interval else None
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=r["variant"])
            ax.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            pts.append((x, y))
            names.append(r["variant"])
        front = stats.pareto_front(pts)
        if front:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front")
            ax.scatter([pts[i][0] for i in front], [pts[i][1] for i in front], s=160, facecolors="none",
                       edgecolors="k")  # fmt: skip
        _label(
            ax,
            task,
            f"energy of the run as configured, J ({energy_label})",
            "test accuracy, % (median, 95% CI)",
        )
    _save(fig, path)


def plot_curves(
    records: list[dict[str, Any]],
    tasks: dict[str, Task],
    variants: Sequence[str],
    path: Path,
    energy_label: str,
) -> None:
    """Per task: validation accuracy against cumulative joules, one line per run, a colour per variant;
    the target as a dashed line (where a line first crosses it is that run's energy to target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    for ax, (task, t) in zip(axes[0], tasks.items()):
        for i, variant in enumerate(variants):
            first = True
            for r in records:
                if r["task"] != task or r["variant"] != variant:
                    continue
                pts = [(j, 100 * a) for _, a, j in r.get("curve", []) if a is not None and j is not None]
                if not pts:
                    continue
                ax.plot(
                    *zip(*pts), "-", color=colours(i % 10), alpha=0.6, lw=1, label=variant if first else None
                )
                first = False
        ax.axhline(100 * t.target, color="k", ls="--", lw=1, label=f"target {100 * t.target:.0f}%")
        _label(
            ax, task, f"cumulative energy, J ({energy_label})", "validation accuracy, % (one line per run)"
        )
    _save(fig, path)


# ---- the run -----------------------------------------------------------------------------------
def idle_lines(rows: list[dict[str, Any]], idle_W: float | None, source: str | None) -> list[str]:
    """GPU mode: the card's idle draw, and what share of each baseline's joules it accounts for."""
    if source is None:
        return []
    if idle_W is None:
        return [f"- card idle power: not measured ({source} reads no GPU counter here)"]
    out = [f"- card idle power: {idle_W:.1f} W over {GPU_IDLE_S:.0f} s before the runs ({source}, read only)"]
    for row in rows:
        if row.get("variant") != "baseline":
            continue
        t, j = getattr(row.get("time_s"), "value", None), getattr(row.get("energy"), "value", None)
        if t and j:
            out.append(
                f"  - {row['task']}: idle floor x fit time = {100 * idle_W * t / j:.0f}% of the baseline's "
                "joules"
            )
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def pin_threads(n: int) -> str:
    """Pin torch's intra-op threads to n (inter-op too, where torch still allows it); say what was pinned."""
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # settable only before any inter-op work has started
        torch.set_num_interop_threads(n)
    return (
        f"torch.set_num_threads({n}): intra-op {torch.get_num_threads()}, inter-op "
        f"{torch.get_num_interop_threads()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="CI smoke test: 1 seed, 2 epochs of 3 batches, tiny data"
    )
    p.add_argument(
        "--seeds", type=int, default=None, help=f"seeds per variant (default {DEFAULT_SEEDS}; quick 1)"
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="trainer.max_epochs for every task (default: TASKS)"
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help=f"GPU mode: {list(GPU_TASKS)} on one CUDA card, energy=auto (NVML), {GPU_SEEDS} seeds, the "
        "card's idle power measured first; never changes the card",
    )
    p.add_argument(
        "--tasks", default=None, help=f"comma list of {list(TASKS)} (or, with --gpu, {list(GPU_TASKS)})"
    )
    p.add_argument(
        "--variants",
        default=None,
        help="comma list (default: baseline, lightning, methods, recipes); a+b: methods a and b together",
    )
    p.add_argument("--energy", default="estimate", choices=["estimate", "auto"])
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument(
        "--out", type=Path, default=None, help="markdown report (default bench/out/energy_bench-*.md)"
    )
    return p.parse_args(argv)


def choose_tasks(names: str | None, table: dict[str, Any], prog: str) -> dict[str, Any]:
    """The `--tasks` comma list (None: all of `table`); an unknown name stops in one line."""
    chosen = names.split(",") if names else list(table)
    unknown = [t for t in chosen if t not in table]
    if unknown:
        raise SystemExit(f"{prog}: unknown task(s) {unknown}; choose from {list(table)}")
    return {t: table[t] for t in chosen}


def _fmt_s(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    import torch

    if args.gpu and not torch.cuda.is_available():  # before quiet(): a plain error, nothing silenced
        raise SystemExit("energy_bench: --gpu needs a CUDA device; none is visible here")
    quiet()
    threads = pin_threads(args.threads)

    table = GPU_TASKS if args.gpu else TASKS
    idle_W, idle_source = None, None
    if args.gpu:
        args.energy = "auto"
        idle_W, idle_source = measure_idle_W(torch.cuda.current_device())
    seeds = args.seeds or (1 if args.quick else GPU_SEEDS if args.gpu else DEFAULT_SEEDS)
    variants = args.variants.split(",") if args.variants else default_variants()
    if args.gpu and not args.variants:
        variants = [v for v in variants if v != "power"]  # read-only towards the card
    tasks = choose_tasks(args.tasks, table, "energy_bench")
    with contextlib.suppress(Exception):  # recipes built by the registry, where it is wired
        from wattwise.methods import registry

        registry.register_recipes()
    extra = [f"energy={args.energy}", *COMMON, *(QUICK if args.quick else [])]
    if args.gpu:
        extra.append("trainer=gpu")
        os.environ["WATTWISE_POWER_DRY_RUN"] = "1"  # should power be asked for: report, change nothing

    def task_overrides(t: Task) -> list[str]:
        epochs = args.epochs or t.epochs
        return [*t.overrides, *([] if args.quick else [f"trainer.max_epochs={epochs}"])]

    total = seeds * len(tasks) * len(variants)
    print(f"energy bench: {len(variants)} variants x {len(tasks)} tasks x {seeds} seeds = {total} runs")
    print(f"  variants: {', '.join(variants)}")
    print(f"  threads: {threads}")
    started = time.perf_counter()
    out = args.out or OUT_DIR / f"energy_bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs_file = out.with_suffix(".runs.jsonl")  # one line per finished run: nothing lost on a crash
    print(f"  runs: {runs_file} (each run appended as it finishes)")
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wattwise-bench-") as work:
        # Untimed warm-up, one epoch per task: pays the process's start-up costs, generates (or
        # loads) the cached data, and times an epoch for the estimate below.
        per_run: dict[str, float] = {}
        for name, t in tasks.items():
            t0 = time.perf_counter()
            warm = [
                o for o in [*task_overrides(t), "optim=[]", *extra] if not o.startswith("trainer.max_epochs=")
            ]
            warm.append("trainer.max_epochs=1")
            run_once(warm, Path(work))
            epoch_s = time.perf_counter() - t0
            per_run[name] = epoch_s * (1 if args.quick else args.epochs or t.epochs) + (
                0 if args.quick else 2
            )
        estimate = seeds * len(variants) * sum(per_run.values())
        print(
            f"  estimate: ~{_fmt_s(estimate)} (one epoch per task timed now x epochs x variants x seeds; "
            f"an upper bound, early-stopping variants stop sooner)",
            flush=True,
        )
        t_runs = time.perf_counter()
        for seed in range(seeds):
            for task, t in tasks.items():
                for pos, variant in enumerate(rotated(variants, seed)):
                    overrides = [*task_overrides(t), *variant_overrides(variant), f"seed={seed}", *extra]
                    s = run_once(overrides, Path(work))
                    ett_J, ett_epoch = stats.energy_to_target(s.get("curve", []), t.target)
                    record = {"task": task, "variant": variant, "seed": seed, "position": pos, **s}
                    record.update(ett_J=ett_J, ett_epoch=ett_epoch, overrides=overrides)
                    records.append(record)
                    with runs_file.open("a") as f:
                        f.write(json.dumps(record, default=str) + "\n")
                    if s.get("status") == "completed":
                        reached = (
                            f"target at epoch {ett_epoch} ({ett_J:.1f} J)"
                            if ett_J is not None
                            else f"target {100 * t.target:.0f}% NOT reached"
                        )
                        detail = (
                            f"{s.get('energy/total_J') or float('nan'):.1f} J  {s.get('epochs')} ep  "
                            f"acc {100 * (s.get('test/acc') or float('nan')):.2f}%  {reached}"
                        )
                    else:
                        detail = f"FAILED: {s.get('error')}"
                    done = len(records)
                    eta = (time.perf_counter() - t_runs) / done * (total - done)
                    head = f"  [{done}/{total}] seed {seed} {task:<14} {variant:<11}"
                    print(f"{head} {detail}  (ETA {_fmt_s(eta)})", flush=True)

    rows = summarise(records, variants)
    lines = verdicts(rows, tasks)
    sources = sorted({str(r.get("energy/source")) for r in records if r.get("energy/source")})
    is_estimate = "estimate" in sources
    energy_label = "ESTIMATE" if is_estimate else "measured: " + ",".join(sources)
    methods = sorted({str(r.get("energy_method")) for r in records if r.get("energy_method")})
    failed = sum(r.get("status") != "completed" for r in records)
    settings = (
        "QUICK (2 epochs of 3 batches, 400 samples; figures are a smoke test only)" if args.quick else "full"
    )
    pareto_png, curves_png = out.with_name(out.stem + "-pareto.png"), out.with_name(out.stem + "-curves.png")
    figures_note = ""
    try:
        plot_pareto(rows, list(tasks), pareto_png, energy_label)
        plot_curves(records, tasks, variants, curves_png, energy_label)
    except Exception as err:  # noqa: BLE001 - the tables matter more than the figures
        figures_note = f"- figures not drawn: {type(err).__name__}: {err}"
    targets = ["| task | kind | target val acc | baseline epochs | paper |", "|---|---|---|---|---|"]
    targets += [
        f"| {n} | {t.kind} | {100 * t.target:.0f}% | {args.epochs or t.epochs} | {t.paper} |"
        for n, t in tasks.items()
    ]
    header = [
        "## wattwise standard energy benchmark",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}; torch {torch.__version__}",
        f"- threads pinned: {threads}",
        f"- energy source: {', '.join(sources) or 'none'}"
        + (" — an ESTIMATE (CPU-seconds x watts), not a measurement" if is_estimate else ""),
        *(f"- how: {m}" for m in methods),
        f"- settings: {settings}; {seeds} seed(s) per variant, variants interleaved, order rotated per seed; "
        f"extra overrides: {' '.join(extra)}",
        f"- runs: {len(records)}, failed: {failed}",
        "- figures: medians over seeds with 95% percentile-bootstrap intervals [low, high]; `x` columns and "
        "`Δacc pt` are medians of per-seed paired ratios / differences against the baseline (or lightning) "
        "of the same seed. `J to target`: energy until val/acc first reached the task's target; a run that "
        "never reached it is counted in `not reached` and enters as inf.",
        f"- wall time of the benchmark: {_fmt_s(time.perf_counter() - started)}",
        *idle_lines(rows, idle_W, idle_source),
        *([figures_note] if figures_note else []),
        "",
    ]
    text = "\n".join(
        [
            *header,
            "### Targets",
            "",
            *targets,
            "",
            "### Results",
            "",
            markdown_table(rows),
            "",
            "### Verdicts",
            "",
            *(f"- {line}" for line in lines),
            "",
            *(
                []
                if figures_note
                else [
                    "### Figures",
                    "",
                    f"![accuracy against energy]({pareto_png.name})",
                    "",
                    f"![validation accuracy against cumulative energy]({curves_png.name})",
                    "",
                ]
            ),
        ]
    )
    out.write_text(text)
    write_csv(rows, out.with_suffix(".csv"))
    plain = [{k: (v.__dict__ if isinstance(v, stats.Estimate) else v) for k, v in r.items()} for r in rows]
    out.with_suffix(".json").write_text(json.dumps({"rows": plain, "runs": records}, indent=1, default=str))
    print("\n" + terminal_table(rows))
    print("\nVerdicts:\n" + "\n".join(f"  {line}" for line in lines))
    print(f"\nEnergy: {energy_label}. Report: {out} (+ .csv, .json, -pareto.png, -curves.png)")
    return out


if __name__ == "__main__":
    main()
