"""The runs of a folder, one per `summary.json` (plus job dirs that never wrote one), and the Pareto mask."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattwise.compare.metric import AUTO, CompareError, Metric, choose_metric

SUMMARY_FILE = "summary.json"
FAILED_STATUSES = ("failed", "interrupted", "no summary")
# Overrides that are not part of what a run *is*: the seed (its own column, the unit of pairing) and
# what the comparison sweeper adds to every job (wattwise.sweeper).
NOT_VARIANT_KEYS = ("optim", "seed")
NOT_VARIANT_PREFIXES = ("sweep.", "hydra.")


@dataclass
class Run:
    """One run, read from a run dir's summary.json."""

    name: str  # the run dir relative to the compared folder, e.g. "3" or "2026-11-26_15-37-47_6473/0"
    status: str
    optim: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    value: float | None = None  # the compared metric (compare.metric: test/acc, test/loss, ...)
    energy_J: float | None = None
    energy_source: str = "off"
    J_per_sample: float | None = None
    time_s: float | None = None
    error: str | None = None
    parallel_jobs: int = 1
    seed: int | None = None
    position: int | None = None  # place in its seed's round (comparison sweeper), else None
    skipped: str | None = None  # every method it asked for stepped aside: why (then it trained as baseline)
    metrics: dict[str, Any] = field(default_factory=dict)
    pareto: bool = False
    variant: str = ""  # set by wattwise.compare.variants.group_runs

    @property
    def accuracy(self) -> float | None:
        """The compared metric's value, by its old name (it was always test/acc)."""
        return self.value

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def compared(self) -> bool:
        """Completed with the method(s) acting: a skipped run trained without them and is not compared."""
        return self.completed and self.skipped is None

    @property
    def optim_label(self) -> str:
        return "+".join(self.optim) if self.optim else "none"

    @property
    def shown_status(self) -> str:
        return f"skipped ({self.skipped})" if self.completed and self.skipped else self.status


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def override_key(text: str) -> str:
    return text.partition("=")[0].lstrip("+~")


def is_variant_override(text: str) -> bool:
    key = override_key(text)
    return key not in NOT_VARIANT_KEYS and not key.startswith(NOT_VARIANT_PREFIXES)


def skipped_reason(summary: dict[str, Any]) -> str | None:
    """Why the run trained without its methods, when every method it asked for stepped aside."""
    statuses = {k[: -len("/status")]: v for k, v in summary.items() if k.endswith("/status")}
    if not statuses or any(v != "skipped" for v in statuses.values()):
        return None
    reasons = [f"{name}: {summary.get(f'{name}/skipped') or 'does not apply'}" for name in sorted(statuses)]
    return "; ".join(reasons)


def _job_dir_without_summary(path: Path) -> bool:
    return (path / ".hydra" / "overrides.yaml").is_file() and not (path / SUMMARY_FILE).is_file()


def _read_overrides(job_dir: Path) -> list[str]:
    try:
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    except Exception:  # noqa: BLE001 - a damaged file only loses the label
        return []


def _optim_from_overrides(overrides: Sequence[str]) -> list[str]:
    chosen: list[str] = []
    for text in overrides:
        key, _, value = text.partition("=")
        if key.lstrip("+~") == "optim":
            value = value.strip()
            inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
            chosen += [v.strip() for v in inner.split(",") if v.strip()]
    return chosen


def _seed_from_overrides(overrides: Sequence[str]) -> int | None:
    for text in overrides:
        if override_key(text) == "seed":
            try:
                return int(text.partition("=")[2])
            except ValueError:
                return None
    return None


def _read_summary(path: Path) -> dict[str, Any] | str:
    """The summary's fields, or why it could not be read."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return f"unreadable summary: {err}"
    return summary if isinstance(summary, dict) else "unreadable summary: not a JSON object"


def _run_from_summary(name: str, s: dict[str, Any] | str, metric: str, energy_key: str) -> Run:
    if isinstance(s, str):
        return Run(name=name, status="failed", error=s)
    launcher = s.get("launcher") or {}
    return Run(
        name=name,
        status=str(s.get("status", "?")),
        optim=[str(o) for o in s.get("optim") or []],
        overrides=[str(o) for o in s.get("overrides") or []],
        value=_number(s.get(metric)),
        energy_J=_number(s.get(energy_key)),
        energy_source=str(s.get("energy/source") or s.get("energy_source") or "off"),
        J_per_sample=_number(s.get("energy/J_per_sample")),
        time_s=_number(s.get("time/train_s")),
        error=s.get("error"),
        parallel_jobs=int(launcher.get("parallel_jobs") or 1),
        seed=_int(s.get("seed"))
        if _int(s.get("seed")) is not None
        else _seed_from_overrides(s.get("overrides") or []),
        position=_int(s.get("position")),
        skipped=skipped_reason(s),
        metrics={k: v for k, v in s.items() if "/" in k},
    )


def _runs_without_summary(folder: Path) -> list[Run]:
    runs = []
    for hydra_dir in sorted(folder.rglob(".hydra")):
        job = hydra_dir.parent
        if _job_dir_without_summary(job):
            overrides = _read_overrides(job)
            runs.append(
                Run(
                    name=_rel(job, folder),
                    status="no summary",
                    optim=_optim_from_overrides(overrides),
                    overrides=overrides,
                    seed=_seed_from_overrides(overrides),
                    error=f"no {SUMMARY_FILE}: the job stopped before training (see {job}/train.log)",
                )
            )
    return runs


def load(
    folder: str | Path, metric: str = AUTO, energy_key: str = "energy/total_J", mode: str = AUTO
) -> tuple[list[Run], Metric]:
    """Every run under `folder` (one per summary.json, plus job dirs that never wrote one) and the
    metric they are ranked by (`auto`: the runs' monitor, see compare.metric)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CompareError(
            f"{folder} is not a directory (pass a sweep dir, e.g. outputs/multirun/<date>/<time>)"
        )
    read = [(_rel(p.parent, folder), _read_summary(p)) for p in sorted(folder.rglob(SUMMARY_FILE))]
    runs = _runs_without_summary(folder)
    if not read and not runs:
        raise CompareError(
            f"no {SUMMARY_FILE} under {folder}: a sweep dir holds one per job "
            "(e.g. outputs/multirun/<date>/<time>/0/summary.json); did the sweep run?"
        )
    chosen = choose_metric([(n, s) for n, s in read if isinstance(s, dict)], metric, mode)
    runs = [_run_from_summary(n, s, chosen.name, energy_key) for n, s in read] + runs
    runs.sort(key=lambda r: natural_key(r.name))
    mark_pareto(runs, chosen.maximize)
    return runs, chosen


def load_runs(
    folder: str | Path, metric: str = AUTO, energy_key: str = "energy/total_J", mode: str = AUTO
) -> list[Run]:
    """Every run under `folder`, ranked by `metric` (see `load`)."""
    return load(folder, metric, energy_key, mode)[0]


def natural_key(name: str) -> list[Any]:
    """Job dirs in job order: "2" before "10"."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def _rel(path: Path, folder: Path) -> str:
    rel = path.relative_to(folder).as_posix()
    return rel if rel != "." else path.name


def pareto_mask(points: Sequence[tuple[float, float]], maximize: bool = True) -> list[bool]:
    """For (metric, energy) points: True where no other point is at least as good for no more energy
    and strictly better on one of the two; good is higher (`maximize`) or lower. Equal points are all on
    the front."""
    sign = 1.0 if maximize else -1.0
    scored = [(sign * m, e) for m, e in points]
    mask = []
    for i, (m_i, e_i) in enumerate(scored):
        dominated = any(
            m_j >= m_i and e_j <= e_i and (m_j > m_i or e_j < e_i)
            for j, (m_j, e_j) in enumerate(scored)
            if j != i
        )
        mask.append(not dominated)
    return mask


def mark_front(items: Sequence[Any], maximize: bool = True) -> None:
    """Set `.pareto` on runs or variants (anything with `energy_source`, `compared`, `value`,
    `energy_J`): the front of the compared ones with both figures, within each energy source."""
    for item in items:
        item.pareto = False
    for source in sorted({i.energy_source for i in items}):
        group = [
            i
            for i in items
            if i.energy_source == source and i.compared and i.value is not None and i.energy_J is not None
        ]
        for item, on_front in zip(group, pareto_mask([(i.value, i.energy_J) for i in group], maximize)):
            item.pareto = on_front


def mark_pareto(runs: Sequence[Run], maximize: bool = True) -> None:
    """Set `run.pareto` for compared runs with both figures, within each energy source."""
    mark_front(runs, maximize)


def source_label(source: str) -> str:
    if source.startswith("zeus"):
        return f"measured ({source})"
    if source == "estimate":
        return "ESTIMATE"
    return source


def varying_overrides(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Per run, the overrides that not every run shares, without optim, seed and the sweeper's own."""
    lists = {r.name: [o for o in r.overrides if is_variant_override(o)] for r in runs}
    common = set.intersection(*(set(v) for v in lists.values())) if len(lists) > 1 else set()
    return {name: [o for o in values if o not in common] for name, values in lists.items()}


def short(text: str) -> str:
    """Long floats (Optuna's learning rates) to 3 significant digits, for display only."""
    return re.sub(r"\d+\.\d{4,}(?:e-?\d+)?", lambda m: f"{float(m.group()):.3g}", text)


def plot_label(override: str) -> str:
    """A short plot label: `model.optimizer.lr=0.0011155` -> `lr=0.00112` (the table keeps full names)."""
    key, sep, value = override.partition("=")
    return short(f"{key.rsplit('.', 1)[-1]}{sep}{value}")
