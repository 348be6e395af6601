"""Replay early-stopping settings on the baseline curves of an energy-bench run (no training).

    python bench/early_stop_replay.py bench/out/energy_bench-<time>.json
    python bench/early_stop_replay.py <file> --grid           # a grid of window/fraction/patience

The rules of `+optim=early_stop` are pure functions of the per-epoch history (validation
accuracy and cumulative energy), so each setting can be replayed on the fixed-epoch baseline's
curves: where it would stop, the energy spent by then (as a fraction of the full run), and the
best validation accuracy it would keep against the full run's best (the checkpoint that is
tested is the best one). This is how the method's defaults were chosen; the benchmark itself
then measures them for real. Validation accuracy stands in for test accuracy here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def replay(curve: list[tuple[int, float, float]], settings: dict[str, Any]) -> tuple[int, float, float]:
    """(epochs trained, energy fraction, validation points lost) of one setting on one curve."""
    from wattwise.methods.early_stop.callback import EarlyStop, EpochRecord

    es = EarlyStop(**settings)
    points = sorted((e, a, j) for e, a, j in curve if a is not None and j is not None)
    total_J, best_all = points[-1][2], max(a for _, a, _ in points)
    prev_J = 0.0
    for i, (epoch, acc, spent) in enumerate(points):
        es.history.append(EpochRecord(epoch, acc, spent - prev_J, spent))
        prev_J = spent
        last = i == len(points) - 1
        if not last and es._evaluate(spent):
            kept = max(a for _, a, _ in points[: i + 1])
            return epoch + 1, spent / total_J, 100 * (best_all - kept)
    return len(points), 1.0, 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_json", type=Path)
    p.add_argument("--grid", action="store_true")
    args = p.parse_args()
    runs = json.loads(args.bench_json.read_text())["runs"]
    curves: dict[str, list[list[tuple[int, float, float]]]] = {}
    for r in runs:
        if r["variant"] == "baseline" and r.get("status") == "completed":
            curves.setdefault(r["task"], []).append([tuple(x) for x in r["curve"]])
    grid = (
        [
            {"window": w, "min_gain_fraction": f, "diminishing_patience": d}
            for w, f, d in itertools.product((3, 5, 8), (0.05, 0.1, 0.2), (2, 3, 4))
        ]
        if args.grid
        else [{}]
    )
    print("| settings | task | epochs (median) | energy x (median) | val points lost (median, worst) |")
    print("|---|---|---|---|---|")
    for settings in grid:
        for task, cs in curves.items():
            res = [replay(c, settings) for c in cs]
            print(
                f"| {settings or 'defaults'} | {task} | {statistics.median(r[0] for r in res):g} | "
                f"{statistics.median(r[1] for r in res):.2f} | "
                f"{statistics.median(r[2] for r in res):.2f}, {max(r[2] for r in res):.2f} |"
            )


if __name__ == "__main__":
    main()
