"""compare's text: the variant table (the default), the per-run table (--runs), and the two CSV files.

`variant_rows` is the one place a variant's figures become text: the terminal table, the variants
CSV and the W&B table (wattwise.compare.wandb_table) all read it, so they never disagree.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wattwise.compare.metric import Metric, as_metric, value_columns, value_text
from wattwise.compare.runs import FAILED_STATUSES, Run, short, source_label, varying_overrides
from wattwise.compare.variants import Variant


def variant_columns(metric: str | Metric = "test/acc") -> tuple[str, ...]:
    """The terminal table's columns, as keys of `variant_rows`."""
    text_key = value_columns(metric)[0]
    return (
        "front",
        "variant",
        "runs_text",
        "seeds",
        text_key,
        "energy",
        "range",
        "ratio",
        "verdict",
        "source",
    )


VARIANT_COLUMNS = variant_columns()  # those of an accuracy (the bundled classifier's test/acc)


def _ratio_text(v: Variant) -> str:
    if v.verdict == "baseline":
        return "1"
    if v.ratio is None or v.ratio.value is None:
        return "-"
    return v.ratio.fmt("{:.3f}")


def _runs_text(v: Variant) -> str:
    failed = sum(not r.completed for r in v.runs)
    return f"{len(v.compared)}" + (f" +{failed} failed" if failed else "")


def variant_rows(variants: Sequence[Variant], metric: str | Metric = "test/acc") -> list[dict[str, Any]]:
    """Per variant: its figures as numbers and as the table shows them; the metric's two keys are
    `value_columns(metric)` (`accuracy` / `median_accuracy` for an accuracy)."""
    text_key, number_key = value_columns(metric)
    rows = []
    for v in variants:
        seeds = sorted({s for s in v.seeds if s is not None})
        rows.append(
            {
                "front": "*" if v.pareto else "",
                "variant": v.label,
                "runs": len(v.compared),
                "runs_text": _runs_text(v),
                "seeds": ",".join(map(str, seeds)) or "-",
                text_key: value_text(v.value, metric),
                "energy": "-" if v.energy_J is None else f"{v.energy_J:.4g} J",
                "range": "-" if v.energy_range is None else "{:.4g}-{:.4g}".format(*v.energy_range),
                "ratio": _ratio_text(v),
                "verdict": v.verdict,
                "source": source_label(v.energy_source) if v.energy_J is not None else "-",
                number_key: v.value,
                "median_energy_J": v.energy_J,
                "ratio_value": v.ratio.value if v.ratio else (1.0 if v.verdict == "baseline" else None),
                "ratio_low": v.ratio.low if v.ratio else None,
                "ratio_high": v.ratio.high if v.ratio else None,
                "pairs": v.ratio.n if v.ratio else 0,
                "pareto": int(v.pareto),
                "energy_source": v.energy_source,
            }
        )
    return rows


def _sorted_variants(variants: Sequence[Variant]) -> list[Variant]:
    """Baselines first, then compared variants by median energy, then skipped and failed ones."""
    return sorted(
        variants,
        key=lambda v: (
            not v.is_baseline or not v.compared,
            not v.compared,
            v.energy_J if v.energy_J is not None else math.inf,
            v.label,
        ),
    )


def _grid(header: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = []
    for row in [header, *rows]:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if row is header:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _count_line(runs: Sequence[Run], variants: Sequence[Variant]) -> str:
    skipped = sum(r.completed and r.skipped is not None for r in runs)
    failed = sum(r.status in FAILED_STATUSES for r in runs)
    return (
        f"{len(runs)} runs in {len(variants)} variants: {sum(r.compared for r in runs)} compared, "
        f"{skipped} skipped, {failed} failed or interrupted"
    )


def format_table(
    runs: Sequence[Run],
    variants: Sequence[Variant],
    metric: str | Metric = "test/acc",
    energy_key: str = "energy/total_J",
) -> str:
    """The variant table: medians, the paired energy ratio with its 95% interval, the verdict."""
    m = as_metric(metric)
    metric = m.name
    header = [
        "front",
        "variant",
        "runs",
        "seeds",
        f"{metric} (median)",
        f"{energy_key} (median)",
        "range",
        "x baseline [95%]",
        "verdict",
        "source",
    ]
    columns = variant_columns(m)
    rows = [[row[c] for c in columns] for row in variant_rows(_sorted_variants(variants), m)]
    lines = [_count_line(runs, variants), *_grid(header, rows, right={2, 4, 5, 6, 7})]
    lines += [
        f"* Pareto front through the variants' medians: no other variant has a {m.better} median {metric} "
        f"for no more median {energy_key} (within one energy source).",
        "x baseline: energy / the baseline's of the same seed, geometric mean over seeds with its 95% "
        "interval; tie = the interval holds 1.0 (no difference this sweep can tell from noise).",
    ]
    return "\n".join(lines + _failures(runs) + warnings(runs))


def _failures(runs: Sequence[Run]) -> list[str]:
    failed = [r for r in runs if not r.completed]
    if not failed:
        return []
    return ["Not completed:"] + [
        f"  run {r.name} [{r.status}] ({r.optim_label}): {r.error or 'no error recorded'}" for r in failed
    ]


def warnings(runs: Sequence[Run]) -> list[str]:
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


def sorted_runs(runs: Sequence[Run], maximize: bool = True) -> list[Run]:
    """Compared runs by energy (lowest first; at equal energy the better metric first), then skipped,
    then the rest."""
    sign = -1.0 if maximize else 1.0
    return sorted(
        runs,
        key=lambda r: (
            not r.completed,
            not r.compared,
            r.energy_J if r.energy_J is not None else math.inf,
            sign * (r.value or 0.0),
            r.name,
        ),
    )


def format_runs_table(
    runs: Sequence[Run], metric: str | Metric = "test/acc", energy_key: str = "energy/total_J"
) -> str:
    """One row per run (`--runs`); `*` marks the runs on the per-run front."""
    m = as_metric(metric)
    metric = m.name
    varying = varying_overrides(runs)
    header = [
        "front",
        "status",
        "variant",
        "seed",
        "overrides",
        metric,
        energy_key,
        "source",
        "mJ/sample",
        "fit s",
        "run",
    ]
    rows = []
    for r in sorted_runs(runs, m.maximize):
        energy = "-" if r.energy_J is None else f"{r.energy_J:.4g} J"
        if r.parallel_jobs > 1 and r.energy_J is not None:
            energy += " shared"
        rows.append(
            [
                "*" if r.pareto else "",
                r.shown_status,
                r.optim_label,
                "-" if r.seed is None else r.seed,
                short(" ".join(varying[r.name])) or "-",
                value_text(r.value, m),
                energy,
                source_label(r.energy_source) if r.energy_J is not None else "-",
                "-" if r.J_per_sample is None else f"{1e3 * r.J_per_sample:.3g}",
                "-" if r.time_s is None else f"{r.time_s:.1f}",
                r.name,
            ]
        )
    n_failed = sum(r.status in FAILED_STATUSES for r in runs)
    lines = [
        f"{len(runs)} runs: {sum(r.completed for r in runs)} completed, {n_failed} failed or interrupted"
    ]
    lines += _grid(header, rows, right={3, 5, 6, 8, 9})
    lines.append(
        f"* Pareto front of single runs: no other compared run has a {m.better} {metric} for no more "
        f"{energy_key} (within one energy source)."
    )
    return "\n".join(lines + _failures(runs) + warnings(runs))


def write_csv(
    runs: Sequence[Run],
    path: str | Path,
    metric: str | Metric = "test/acc",
    energy_key: str = "energy/total_J",
) -> Path:
    """One row per run: the table's columns, then every metric found in any summary."""
    path = Path(path)
    m = as_metric(metric)
    metric = m.name
    extra = sorted({k for r in runs for k in r.metrics} - {metric, energy_key})
    fields = [
        "run",
        "status",
        "variant",
        "seed",
        "position",
        "skipped",
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
        for r in sorted_runs(runs, m.maximize):
            writer.writerow(
                {
                    **{k: r.metrics.get(k) for k in extra},
                    "run": r.name,
                    "status": r.status,
                    "variant": r.variant,
                    "seed": r.seed,
                    "position": r.position,
                    "skipped": r.skipped or "",
                    "pareto": int(r.pareto),
                    "optim": r.optim_label,
                    "overrides": " ".join(r.overrides),
                    metric: r.value,
                    energy_key: r.energy_J,
                    "energy_source": r.energy_source,
                    "parallel_jobs": r.parallel_jobs,
                    "error": r.error or "",
                }
            )
    return path


def write_variants_csv(
    variants: Sequence[Variant], path: str | Path, metric: str | Metric = "test/acc"
) -> Path:
    """One row per variant: the table's figures as numbers (medians, ratio, interval, pairs, verdict)."""
    path = Path(path)
    fields = [
        "variant",
        "runs",
        "seeds",
        value_columns(metric)[1],
        "median_energy_J",
        "ratio_value",
        "ratio_low",
        "ratio_high",
        "pairs",
        "verdict",
        "pareto",
        "energy_source",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(variant_rows(_sorted_variants(variants), metric))
    return path
