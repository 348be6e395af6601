"""compare's variant table on Weights & Biases: one run named `compare` in the sweep's group.

It logs `variant_rows` (the figures of the terminal table, the same numbers and the same text) as a
W&B Table under `compare/variants`, and each variant's numbers in the run's summary under
`compare/<variant>/...`, so the W&B comparison and `compare` never disagree. Offline without a key
or network, as every wattwise W&B run (`wattwise.utils.wandb_logger.choose_mode`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wattwise.compare.metric import Metric, as_metric, value_columns
from wattwise.compare.table import variant_rows
from wattwise.compare.variants import Variant

TABLE_KEY = "compare/variants"


def table_columns(metric: str | Metric = "test/acc") -> tuple[str, ...]:
    """The W&B table's columns: the metric's two named by `value_columns` (accuracy: `median_accuracy`,
    `accuracy`; test/loss: `median_test_loss`, `test/loss`)."""
    text_key, number_key = value_columns(metric)
    return (
        "variant", "runs", "seeds", number_key, "median_energy_J", "ratio_value", "ratio_low", "ratio_high",
        "pairs", "verdict", "pareto", "energy_source", text_key, "energy", "ratio",
    )  # fmt: skip


def summary_figures(metric: str | Metric = "test/acc") -> tuple[str, ...]:
    """Each variant's figures in the run's summary, under `compare/<variant>/`."""
    number_key = value_columns(metric)[1]
    return ("runs", number_key, "median_energy_J", "ratio_value", "ratio_low", "ratio_high", "pairs",
            "verdict", "pareto")  # fmt: skip


TABLE_COLUMNS = table_columns()  # an accuracy's (the bundled classifier's test/acc)
SUMMARY_FIGURES = summary_figures()


def sweep_group(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep's runs (as `wattwise.utils.wandb_logger.hydra_group_and_name` names it)."""
    return str(sweep_dir).replace(os.sep, "_")


def log_variant_table(
    variants: Sequence[Variant],
    project: str = "wattwise",
    folder: str | Path | None = None,
    group: str | None = None,
    mode: str | None = None,
    save_dir: str | Path | None = None,
    metric: str | Metric = "test/acc",
    **init_kwargs: Any,
) -> str:
    """Log the table in a run named `compare`; returns the run's dir (offline) or URL. `metric`: the one
    compare ranked by (`compare(...)["metric"]`), so the columns are named and formatted as its table's."""
    import wandb

    from wattwise.utils.wandb_logger import choose_mode

    m = as_metric(metric)
    rows, columns, figures = variant_rows(variants, m), table_columns(m), summary_figures(m)
    run = wandb.init(
        project=project,
        group=group or (sweep_group(folder) if folder is not None else None),
        name="compare",
        job_type="compare",
        dir=str(save_dir or folder or "."),
        mode=choose_mode(mode),
        config={"compare/metric": m.name, "compare/mode": m.mode},
        **init_kwargs,
    )
    try:
        table = wandb.Table(columns=list(columns), data=[[row[c] for c in columns] for row in rows])
        run.log({TABLE_KEY: table})
        labels = [row["variant"] for row in rows]
        for row in rows:  # a variant measured by two sources has two rows: the source tells them apart
            name = row["variant"]
            if labels.count(name) > 1:
                name = f"{name} ({row['energy_source']})"
            run.summary.update({f"compare/{name}/{k}": row[k] for k in figures if row[k] is not None})
        where = run.url or run.dir
    finally:
        run.finish()
    return str(where)
