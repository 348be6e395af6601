"""Replay early-stopping settings on recorded baseline curves (no training).

    python bench/early_stop_replay.py bench/results/cpu-2026-12-01-all-variants.json   # an energy-bench run
    python bench/early_stop_replay.py bench/results/early-stop-curves-60ep.jsonl --lengths 20,40,60
    python bench/early_stop_replay.py <file> --grid            # diminishing returns: window/fraction/patience
    python bench/early_stop_replay.py <file> --forecast-grid   # forecast: tolerance/min_epochs/confidence

The rules of `+optim=early_stop` are pure functions of the per-epoch history (the monitored metric
and cumulative energy), so each setting can be replayed on a fixed-epoch baseline's curve: where it
would stop, the energy spent by then (as a fraction of the full run), and the best validation
accuracy it would keep against the full run's best (the checkpoint that is tested is the best
one). A curve recorded for 60 epochs (bench/early_stop_record.py; no learning-rate schedule) is
also the 20- and 40-epoch run: `--lengths` cuts it. Validation accuracy stands in for test accuracy.

For the `forecast` rule it also checks the forecast: at the stopping point (or, for a run that went
on, halfway) whether the value observed at the last epoch fell inside the forecast's interval.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

Curve = list[dict[str, Any]]  # per epoch: epoch, acc, loss (or None), J (cumulative)

# The settings the tables compare: the rules' current defaults and the forecast rule.
NAMED: dict[str, dict[str, Any]] = {
    "diminishing (window 8, patience 4)": {"tolerance": None, "min_gain_fraction": 0.2},
    "diminishing (window 5, patience 2)": {
        "tolerance": None,
        "min_gain_fraction": 0.2,
        "window": 5,
        "diminishing_patience": 2,
    },
    "forecast (tolerance 0.5)": {"tolerance": 0.5, "min_gain_fraction": None},
    "forecast (tolerance 0.5), val/loss min": {
        "tolerance": 0.5,
        "min_gain_fraction": None,
        "monitor": "val/loss",
        "mode": "min",
    },
    "forecast, max 2 kJ per point": {"tolerance": None, "max_J_per_point": 2000.0, "min_gain_fraction": None},
}


@dataclass
class Outcome:
    epochs: int
    energy_x: float
    points_lost: float  # validation accuracy points: best kept vs the full run's best
    reason: str
    covered: bool | None  # the last epoch's value inside the forecast's interval (None: no forecast)


def replay(curve: Curve, settings: dict[str, Any], length: int | None = None) -> Outcome:
    """One setting on the first `length` epochs of one curve."""
    from wattwise.methods.early_stop.callback import EarlyStop, EpochRecord

    points = [p for p in curve if p["acc"] is not None and p["J"] is not None]
    points = sorted(points, key=lambda p: p["epoch"])[: length or None]
    key = "loss" if settings.get("monitor") == "val/loss" else "acc"
    es = EarlyStop(**settings)
    es.max_epochs = len(points)
    total_J, prev_J = points[-1]["J"], 0.0
    stop, reason = len(points), "max_epochs"
    for i, p in enumerate(points):
        es.history.append(EpochRecord(p["epoch"], p[key], p["J"] - prev_J, p["J"]))
        prev_J = p["J"]
        fired = es._evaluate(p["J"]) if i < len(points) - 1 else []
        if fired:
            stop, reason = i + 1, fired[0]
            break
    fc = es.forecast if reason != "max_epochs" else es._halfway()
    last = points[-1][key]
    covered = None if fc is None else bool(fc.final_low <= last <= fc.final_high)
    kept = _kept_acc(points[:stop], key, es.sign)
    return Outcome(
        stop, points[stop - 1]["J"] / total_J, 100 * (_kept_acc(points, key, es.sign) - kept), reason, covered
    )


def run(curve: Curve, settings: dict[str, Any], length: int | None) -> Outcome:
    return oracle(curve, length) if settings is ORACLE else replay(curve, settings, length)


def oracle(curve: Curve, length: int | None, within: float = 0.5) -> Outcome:
    """The earliest stop that keeps the full run's best validation accuracy within `within` points,
    known only in hindsight: the most any rule could save at that loss on this curve."""
    points = sorted(
        (p for p in curve if p["acc"] is not None and p["J"] is not None), key=lambda p: p["epoch"]
    )
    points = points[: length or None]
    best = max(p["acc"] for p in points)
    stop = next(
        i + 1 for i in range(len(points)) if 100 * (best - max(p["acc"] for p in points[: i + 1])) <= within
    )
    lost = 100 * (best - max(p["acc"] for p in points[:stop]))
    return Outcome(stop, points[stop - 1]["J"] / points[-1]["J"], lost, "oracle", None)


def _kept_acc(points: Curve, key: str, sign: float) -> float:
    """The validation accuracy of the checkpoint kept: the best epoch by the monitored metric."""
    best = max(points, key=lambda p: sign * p[key])
    return float(best["acc"])


def load_curves(path: Path, seeds: set[int] | None = None) -> dict[str, list[Curve]]:
    """Task -> curves, from an energy-bench .json (its completed baseline runs) or a recorded .jsonl."""
    curves: dict[str, list[Curve]] = {}
    if path.suffix == ".jsonl":
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if seeds is None or rec["seed"] in seeds:
                curves.setdefault(rec["task"], []).append(rec["curve"])
        return curves
    for r in json.loads(path.read_text())["runs"]:
        if seeds is not None and r.get("seed") not in seeds:
            continue
        if r["variant"] == "baseline" and r.get("status") == "completed":
            rows = [{"epoch": e, "acc": a, "loss": None, "J": j} for e, a, j in r["curve"]]
            curves.setdefault(r["task"], []).append(rows)
    return curves


def grids(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    if args.grid:
        return {
            f"window {w}, fraction {f}, patience {d}": {
                "window": w,
                "min_gain_fraction": f,
                "diminishing_patience": d,
            }
            for w, f, d in itertools.product((3, 5, 8), (0.05, 0.1, 0.2), (2, 3, 4))
        }
    if args.forecast_grid:
        return {
            f"tolerance {t}, min_epochs {m}, confidence {c}": {
                "tolerance": t,
                "min_epochs": m,
                "confidence": c,
                "min_gain_fraction": None,
            }
            for t, m, c in itertools.product((0.25, 0.5, 1.0), (5, 8, 10), (0.8, 0.9, 0.95))
        }
    return {**NAMED, "oracle (hindsight: earliest stop within 0.5 val points)": ORACLE}


ORACLE: dict[str, Any] = {}  # not a setting: the hindsight reference (oracle())


def summarise(res: list[Outcome]) -> dict[str, Any]:
    cov = [r.covered for r in res if r.covered is not None]
    stopped = [r.covered for r in res if r.covered is not None and r.reason != "max_epochs"]
    return {
        "epochs": statistics.median(r.epochs for r in res),
        "energy_x": statistics.median(r.energy_x for r in res),
        "lost": statistics.median(r.points_lost for r in res),
        "worst": max(r.points_lost for r in res),
        "covered": f"{sum(cov)}/{len(cov)}" if cov else "-",
        "covered_at_stop": f"{sum(stopped)}/{len(stopped)}" if stopped else "-",
        "n": len(res),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("curves", type=Path, help="an energy-bench .json or a recorded .jsonl")
    p.add_argument("--lengths", default=None, help="comma list of max_epochs to cut the curves to")
    p.add_argument("--grid", action="store_true")
    p.add_argument("--forecast-grid", action="store_true")
    p.add_argument("--goals", action="store_true", help="one line per setting: the issue's goals met?")
    p.add_argument("--seeds", default=None, help="comma list: only these seeds' curves")
    args = p.parse_args()
    curves = load_curves(args.curves, {int(x) for x in args.seeds.split(",")} if args.seeds else None)
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else [None]
    if args.goals:
        print(
            "| settings | worst task's median points lost (per length) | largest energy x at 40/60 "
            "| forecast at the stop in its interval | goals |"
        )
        print("|---|---|---|---|---|")
    else:
        print(
            "| settings | length | task | epochs (median) | energy x (median) | val points lost "
            "(median, worst) | forecast in interval (all; at stop) |"
        )
        print("|---|---|---|---|---|---|---|")
    has_loss = all(p.get("loss") is not None for cs in curves.values() for c in cs for p in c)
    for name, settings in grids(args).items():
        if settings.get("monitor") == "val/loss" and not has_loss:
            continue  # an energy-bench file records no validation loss
        rows = {}
        for length, (task, cs) in itertools.product(lengths, curves.items()):
            rows[(length, task)] = summarise([run(c, settings, length) for c in cs])
        if args.goals:
            print(goal_line(name, rows, lengths))
            continue
        for (length, task), s in rows.items():
            print(
                f"| {name} | {length or 'full'} | {task} | {s['epochs']:g} | {s['energy_x']:.2f} | "
                f"{s['lost']:.2f}, {s['worst']:.2f} | {s['covered']}; {s['covered_at_stop']} |"
            )


def goal_line(name: str, rows: dict[tuple[Any, str], dict[str, Any]], lengths: list[Any]) -> str:
    """The issue's goals on the replay: median loss <= 0.5 points everywhere, energy <= 0.6x at 40 and 60,
    the forecast inside its interval in >= 90% of the runs."""
    lost = {n: max(s["lost"] for (length, _), s in rows.items() if length == n) for n in lengths}
    long = [s["energy_x"] for (length, _), s in rows.items() if length in (40, 60)]
    cov = [s["covered_at_stop"] for s in rows.values() if s["covered_at_stop"] != "-"]
    hit = sum(int(c.split("/")[0]) for c in cov)
    tot = sum(int(c.split("/")[1]) for c in cov)
    ok = (
        all(v <= 0.5 for v in lost.values())
        and (not long or max(long) <= 0.6)
        and (not tot or hit >= 0.9 * tot)
    )
    lost_txt = ", ".join(f"{n or 'full'}: {v:.2f}" for n, v in lost.items())
    energy_txt = f"{max(long):.2f}" if long else "-"
    return f"| {name} | {lost_txt} | {energy_txt} | {hit}/{tot} | {'yes' if ok else 'no'} |"


if __name__ == "__main__":
    main()
