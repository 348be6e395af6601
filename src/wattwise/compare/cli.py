"""`compare()` (load, group, table, CSV files, plot) and the command line, `python -m wattwise.compare`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wattwise.compare.metric import AUTO, LEGACY
from wattwise.compare.plot import plot
from wattwise.compare.runs import CompareError, load
from wattwise.compare.table import format_runs_table, format_table, write_csv, write_variants_csv
from wattwise.compare.variants import group_runs


def compare(
    folder: str | Path,
    metric: str = AUTO,
    energy_key: str = "energy/total_J",
    out: str | Path | None = None,
    make_plot: bool = True,
    mode: str = AUTO,
) -> dict[str, Any]:
    """Load and group the runs, write the CSV files and the PNG. `metric` / `mode` `auto`: from the runs'
    recorded monitor (compare.metric), so a regression sweep is ranked by its loss, lowest first.

    Returns {"runs", "variants", "metric" (a compare.metric.Metric), "table" (by variant), "runs_table",
    "csv", "variants_csv", "png"}."""
    folder = Path(folder)
    runs, chosen = load(folder, metric, energy_key, mode)
    variants = group_runs(runs, chosen.maximize)
    out_dir = Path(out) if out else folder
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "runs": runs,
        "variants": variants,
        "metric": chosen,
        "table": format_table(runs, variants, chosen, energy_key),
        "runs_table": format_runs_table(runs, chosen, energy_key),
        "csv": write_csv(runs, out_dir / "compare.csv", chosen, energy_key),
        "variants_csv": write_variants_csv(variants, out_dir / "compare_variants.csv", chosen),
        "png": None,
    }
    if make_plot:
        title = f"{folder.resolve().name}: {chosen.name} vs {energy_key}"
        result["png"] = plot(runs, variants, out_dir / "compare.png", chosen, energy_key, title)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wattwise.compare",
        description="Compare a sweep's runs (their summary.json files) by variant: table, CSV, Pareto plot.",
    )
    parser.add_argument("folder", help="a sweep dir (outputs/multirun/<date>/<time>) or any folder of runs")
    parser.add_argument(
        "--metric",
        default=AUTO,
        help="metric to rank by (default auto: the runs' monitored metric's test counterpart where they "
        "have it, e.g. test/acc or test/loss, else the monitored metric; test/acc for older summaries)",
    )
    parser.add_argument(
        "--mode",
        default=AUTO,
        choices=["auto", "min", "max"],
        help="whether lower (min) or higher (max) is better (default auto: the runs' recorded mode)",
    )
    parser.add_argument(
        "--energy", default="energy/total_J", help="energy metric to minimize (default: energy/total_J)"
    )
    parser.add_argument(
        "--out", default=None, help="where to write the CSV files and compare.png (default: the folder)"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--runs", action="store_true", help="also print one row per run")
    parser.add_argument(
        "--wandb",
        metavar="PROJECT",
        default=None,
        help="also log the variant table to W&B (a run named compare)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = compare(
            args.folder, args.metric, args.energy, args.out, make_plot=not args.no_plot, mode=args.mode
        )
    except CompareError as err:
        print(f"wattwise.compare: error: {err}", file=sys.stderr)
        return 2
    print(result["table"])
    if args.runs:
        print("\n" + result["runs_table"])
    chosen = result["metric"]
    if (chosen.name, chosen.mode) != LEGACY:  # test/acc, max: what compare always ranked by, said as before
        print(f"\nmetric: {chosen.name}, {chosen.better} is better ({chosen.why})", end="")
    print(f"\nCSV:  {result['csv']}\n      {result['variants_csv']}")
    if result["png"]:
        print(f"plot: {result['png']}")
    if args.wandb:
        from wattwise.compare.wandb_table import log_variant_table

        where = log_variant_table(
            result["variants"], project=args.wandb, folder=args.folder, metric=result["metric"]
        )
        print(f"W&B:  {where}")
    return 0
