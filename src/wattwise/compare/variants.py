"""Runs grouped by variant: medians, the paired ratio against the baseline of the same seed, tie marks.

A *variant* is what a run is apart from its seed: its methods (`optim`) and the overrides that
differ between the folder's runs, without the seed and what the comparison sweeper adds. Runs of
one variant are its repeats. The *baseline* of a variant is the variant with no methods and the
same other overrides (`none`, or `none model=cnn` for `amp model=cnn`).

Its energy ratio is paired: each run against the baseline run of the same seed (the k-th run of a
seed against the k-th of that seed, when seeds repeat), then the geometric mean of those ratios
with a 95% t interval (`wattwise.stats.paired_ratio_ci`). The verdict:

- `baseline`: the reference of at least one other variant (one that no variant is compared with
  shows `single run` or `-`: a folder of unrelated runs, an Optuna study);
- `tie`: the interval holds 1.0, so the sweep cannot tell the difference from noise;
- `lower` / `higher`: the whole interval is below / above 1.0;
- `single run`: one pair, no interval (run more seeds);
- `no baseline`: no baseline run of any of its seeds;
- `skipped (reason)`: the method stepped aside in every run (it does not apply here: those runs
  trained as the baseline did), never compared, never on the front;
- `failed`: no run completed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from wattwise.compare.runs import Run, mark_front, varying_overrides
from wattwise.stats import Estimate, paired_ratio_ci

BASELINE = "none"


@dataclass
class Variant:
    """The runs of one variant and their figures."""

    label: str
    optim_label: str
    rest: tuple[str, ...]  # its overrides beyond optim (those that differ between the folder's runs)
    runs: list[Run] = field(default_factory=list)
    value: float | None = None  # medians over the compared runs: the compared metric (compare.metric)
    energy_J: float | None = None
    energy_range: tuple[float, float] | None = None
    energy_source: str = "off"
    ratio: Estimate | None = None  # energy / baseline's, paired by seed
    verdict: str = ""
    pareto: bool = False

    @property
    def accuracy(self) -> float | None:
        """The compared metric's median, by its old name (it was always test/acc)."""
        return self.value

    @property
    def compared(self) -> list[Run]:
        return [r for r in self.runs if r.compared]

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    @property
    def is_baseline(self) -> bool:
        return self.optim_label == BASELINE

    @property
    def skipped(self) -> str | None:
        reasons = sorted({r.skipped for r in self.runs if r.completed and r.skipped})
        if reasons and not self.compared:
            return " | ".join(reasons)
        return None


def _label(optim_label: str, rest: Sequence[str]) -> str:
    return " ".join([optim_label, *rest])


def _median(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def paired_figures(runs: Sequence[Run], attr: str = "energy_J") -> dict[tuple[int | None, int], float | None]:
    """{(seed, k): figure} for compared runs, k counting the runs of the same seed in job order."""
    seen: dict[int | None, int] = {}
    out: dict[tuple[int | None, int], float | None] = {}
    for r in runs:
        if not r.compared:
            continue
        k = seen.get(r.seed, 0)
        seen[r.seed] = k + 1
        out[(r.seed, k)] = getattr(r, attr)
    return out


def group_runs(runs: Sequence[Run], maximize: bool = True) -> list[Variant]:
    """Variants in order of their first run (job order), one per energy source; sets `run.variant`.
    `maximize`: whether the compared metric is better higher (test/acc) or lower (test/loss).

    Runs of one variant measured by different sources (an estimate, a counter) are separate rows:
    their joules never enter one median. A run without an energy figure joins its variant's first row."""
    varying = varying_overrides(runs)
    variants: dict[tuple[str, str | None], Variant] = {}
    for r in sorted(runs, key=lambda r: r.energy_J is None):  # runs with energy found the rows
        rest = tuple(varying[r.name])
        label = _label(r.optim_label, rest)
        r.variant = label
        key = (label, r.energy_source if r.energy_J is not None else None)
        if key[1] is None:
            key = next((k for k in variants if k[0] == label), key)
        variants.setdefault(key, Variant(label=label, optim_label=r.optim_label, rest=rest)).runs.append(r)
    order = {r.name: i for i, r in enumerate(runs)}
    out = sorted(variants.values(), key=lambda v: min(order[r.name] for r in v.runs))
    for v in out:
        v.runs.sort(key=lambda r: order[r.name])
        _figures(v)
    by_key = {(v.label, v.energy_source): v for v in out}
    baselines = {v.label: by_key.get((_label(BASELINE, v.rest), v.energy_source)) for v in out}
    for v in out:
        _verdict(v, baselines[v.label])
        if v.verdict == "baseline" and not any(b is v for k, b in baselines.items() if k != v.label):
            v.verdict = "single run" if len(v.compared) == 1 else "-"  # nothing is compared with it
    mark_variant_pareto(out, maximize)
    return out


def _figures(v: Variant) -> None:
    ok = v.compared
    v.value = _median([r.value for r in ok])
    v.energy_J = _median([r.energy_J for r in ok])
    energies = [r.energy_J for r in ok if r.energy_J is not None]
    v.energy_range = (min(energies), max(energies)) if energies else None
    sources = sorted({r.energy_source for r in v.runs if r.energy_J is not None})
    v.energy_source = sources[0] if sources else "off"


def _verdict(v: Variant, baseline: Variant | None) -> None:
    if v.skipped:
        v.verdict = f"skipped ({v.skipped})"
    elif not v.compared:
        v.verdict = "failed"
    elif v is baseline:
        v.verdict = "baseline"
    elif baseline is None or not baseline.compared:
        v.verdict = "no baseline"
    else:
        v.ratio = paired_ratio_ci(paired_figures(v.runs), paired_figures(baseline.runs))
        if v.ratio.n == 0:
            v.verdict = "no baseline"  # none of its seeds has a baseline run
        elif not v.ratio.has_interval:
            v.verdict = "single run"
        elif v.ratio.low <= 1.0 <= v.ratio.high:
            v.verdict = "tie"
        else:
            v.verdict = "lower" if v.ratio.high < 1.0 else "higher"


def mark_variant_pareto(variants: Sequence[Variant], maximize: bool = True) -> None:
    """The front through the variants' medians, within each energy source; skipped and failed are off it."""
    mark_front(variants, maximize)
