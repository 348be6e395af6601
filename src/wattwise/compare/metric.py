"""Which metric compare ranks by, and whether lower or higher is better: the runs' own monitor.

Each run's summary.json records the run-wide `monitor` / `mode` it trained with (conf/train.yaml,
`wattwise.utils.monitor`). `--metric auto` takes the monitored metric's test counterpart where the
runs have it (`val/loss` -> `test/loss`; `test/acc` for the bundled classifier), else the monitored
metric itself; `--mode auto` takes the runs' mode. Summaries written before the monitor existed
hold none: then `test/acc`, maximised, as compare always did. Runs that disagree on what they
monitored cannot be ranked by one metric: a one-line error names them, unless both `--metric` and
`--mode` are given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wattwise.utils.metric_names import is_accuracy

AUTO = "auto"
LEGACY = ("test/acc", "max")  # summaries without a monitor: what compare always ranked by
MODES = ("min", "max")


class CompareError(Exception):
    """Nothing to compare (no folder, no summaries, no one metric); reported in one line."""


@dataclass(frozen=True)
class Metric:
    """The compared metric: its name, `max` or `min`, and how it was chosen (one phrase)."""

    name: str = LEGACY[0]
    mode: str = LEGACY[1]
    why: str = "default"

    @property
    def maximize(self) -> bool:
        return self.mode == "max"

    @property
    def is_accuracy(self) -> bool:
        return is_accuracy(self.name)

    @property
    def better(self) -> str:
        """`higher` or `lower`: the word the table's notes use."""
        return "higher" if self.maximize else "lower"


def test_counterpart(monitor: str) -> str:
    """`val/loss` -> `test/loss`; a monitor outside `val/` is its own counterpart."""
    stage, _, rest = monitor.partition("/")
    return f"test/{rest}" if stage == "val" and rest else monitor


def _recorded(summary: Mapping[str, Any]) -> tuple[str, str] | None:
    """(monitor, mode) the run trained with; None when not recorded (older summary) or never resolved."""
    monitor, mode = summary.get("monitor"), summary.get("mode")
    if not isinstance(monitor, str) or monitor in ("", AUTO) or mode not in MODES:
        return None
    return monitor, str(mode)


def _disagreement(monitors: Mapping[tuple[str, str], list[str]]) -> str:
    parts = []
    for (monitor, mode), names in sorted(monitors.items()):
        shown = ", ".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{monitor} ({mode}): {shown}")
    return (
        "the runs monitored different metrics (" + "; ".join(parts) + "): compare them in separate folders, "
        "or pass both --metric and --mode"
    )


def _guess_mode(name: str) -> str:
    from wattwise.utils.monitor import mode_for

    guessed = mode_for(name)
    if guessed is None:
        raise CompareError(f"--mode auto cannot tell whether {name} should rise or fall: pass --mode min|max")
    return guessed


def choose_metric(
    summaries: Sequence[tuple[str, Mapping[str, Any]]], metric: str = AUTO, mode: str = AUTO
) -> Metric:
    """The metric and mode to rank by, from (run name, summary) pairs; CompareError in one line."""
    if mode not in (*MODES, AUTO):
        raise CompareError(f"--mode must be min, max or auto, got {mode!r}")
    if metric != AUTO and mode != AUTO:
        return Metric(metric, mode, "set by --metric and --mode")
    monitors: dict[tuple[str, str], list[str]] = {}
    for name, summary in summaries:
        if (pair := _recorded(summary)) is not None:
            monitors.setdefault(pair, []).append(name)
    if len(monitors) > 1:
        raise CompareError(_disagreement(monitors))
    if not monitors:  # summaries from before the run-wide monitor
        name = LEGACY[0] if metric == AUTO else metric
        chosen_mode = mode if mode != AUTO else (LEGACY[1] if metric == AUTO else _guess_mode(name))
        return Metric(name, chosen_mode, "no monitor recorded in the summaries")
    ((monitor, run_mode),) = monitors
    counterpart = test_counterpart(monitor)
    if metric == AUTO:
        has_test = any(s.get(counterpart) is not None for _, s in summaries)
        metric = counterpart if has_test else monitor
        why = f"the runs monitored {monitor} ({run_mode})"
    else:
        why = "set by --metric"
    if mode == AUTO:
        mode = run_mode if metric in (monitor, counterpart) else _guess_mode(metric)
    return Metric(metric, mode, why)


def as_metric(metric: str | Metric) -> Metric:
    """A Metric from a name alone (the mode from the name, else max, as compare always ranked)."""
    if isinstance(metric, Metric):
        return metric
    from wattwise.utils.monitor import mode_for

    return Metric(metric, mode_for(metric) or "max", "given")


def value_text(value: float | None, metric: str | Metric) -> str:
    """An accuracy in % (`91.20 %`), any other metric as a plain number (`0.1234`)."""
    if value is None:
        return "-"
    return f"{100 * value:.2f} %" if as_metric(metric).is_accuracy else f"{value:.4g}"


def value_columns(metric: str | Metric) -> tuple[str, str]:
    """The (text, number) column names of the metric in the variant rows, CSV and W&B table:
    `accuracy` / `median_accuracy` for an accuracy, else its name / `median_<name>` (`/` as `_`)."""
    m = as_metric(metric)
    if m.is_accuracy:
        return "accuracy", "median_accuracy"
    return m.name, "median_" + re.sub(r"\W+", "_", m.name)
