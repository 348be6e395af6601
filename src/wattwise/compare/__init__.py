"""Compare the runs of a sweep by variant: medians, paired intervals, tie marks, the Pareto front.

    python -m wattwise.compare outputs/multirun/2026-11-26/15-27-49
    python -m wattwise.compare outputs/optuna/energy_pareto --metric val/acc --runs
    python -m wattwise.compare outputs/multirun/<regression sweep> --metric test/mae --mode min
    make compare SWEEP=outputs/multirun/2026-11-26/15-27-49

Reads every `summary.json` under the folder, at any depth (a multirun's job dirs, all
sessions of an Optuna study, or any folder of runs), groups the runs by variant (what a run is
apart from its seed; see `variants.py`) and writes

- a table to the terminal, one row per variant: runs, seeds, median metric and energy, the
  paired energy ratio against the baseline of the same seed with its 95% interval, and a verdict
  (`tie` when that interval holds 1.0, `single run`, `skipped (reason)`, ...); `*` marks the Pareto
  front through the variants' medians. `--runs` adds the old one-row-per-run table;
- `compare.csv` (one row per run, every metric of every summary) and `compare_variants.csv`
  (one row per variant, the table's figures as numbers);
- `compare.png`: the median metric against median energy, the front drawn through the medians.

The metric is the runs' own (`metric.py`): by default the monitored metric's test counterpart that
each summary records (`test/acc` for the bundled classifier, `test/loss` for a module monitoring
`val/loss`), with its mode: for `min` the front is the lowest metric for the fewest joules. An
accuracy is shown in %, any other metric as a plain number under its name. Runs that monitored
different metrics fail in one line naming them.

Failed and interrupted runs are listed with their error and never compared. A job dir with no
summary (the job stopped before training, e.g. on a config error) is listed as failed too. A run
whose methods all stepped aside (`if_not_applicable=skip`: the method does not apply here) is
`skipped (reason)`: it trained as the baseline did, so it is neither compared nor on the front.

Energy sources are never mixed silently: the source of each row is shown (`ESTIMATE` or the
hardware counter), and when a folder holds several the front is computed within each source and
a warning says so. Jobs that ran in parallel on one machine (joblib launcher) share its power;
their rows are marked and a warning says so.

Offline: reads only files; W&B is not needed (`--wandb PROJECT` logs the same table there).
Exit code 0, or 2 with a one-line error.
"""

from wattwise.compare.cli import compare, main
from wattwise.compare.metric import Metric, choose_metric
from wattwise.compare.runs import CompareError, Run, load, load_runs, mark_pareto, pareto_mask
from wattwise.compare.table import format_runs_table, format_table, variant_rows, write_csv
from wattwise.compare.variants import Variant, group_runs

__all__ = [
    "CompareError",
    "Metric",
    "Run",
    "Variant",
    "choose_metric",
    "compare",
    "format_runs_table",
    "format_table",
    "group_runs",
    "load",
    "load_runs",
    "main",
    "mark_pareto",
    "pareto_mask",
    "variant_rows",
    "write_csv",
]
