"""What one fit's search decided, and how it is told: the checkpoint state, the log line, the table.

`Outcome` is plain data (the checkpoint's state and the `batch_size/*` figures); the functions here
turn it into text, so the callback only logs what they return (under its own logger).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattwise.methods.batch_size.choose import Choice, PairChoice, infeasible_reason
from wattwise.methods.batch_size.measure import CandidateMeasurement

# the fields a checkpoint keeps under their own names (`candidates`, `not_tried`: records, dropped)
_PLAIN = (
    "chosen",
    "configured",
    "lr_before",
    "lr_after",
    "lr_rule",
    "profile",
    "search_J",
    "search_s",
    "memory_limit_bytes",
    "energy_source",
)


@dataclass
class Outcome:
    """The choice and what it was made from; a resumed run re-applies it without measuring."""

    chosen: int | None = None
    configured: int | None = None
    lr_before: float | None = None
    lr_after: float | None = None
    lr_rule: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    profile: str | None = None  # measured | cached
    profile_file: Path | None = None
    search_J: float | None = None
    search_s: float | None = None
    memory_limit_bytes: int | None = None
    energy_source: str | None = None
    dropped: dict[str, str] = field(default_factory=dict)  # sizes not tried (the epoch too short), why
    joint: bool = False  # chosen with the power limit (the joint search)
    limit_W: int | None = None  # the power limit chosen with the size (joint search)
    joint_fallback: str | None = None  # joint_power asked for, but why it could not be done (not saved)

    def to_state(self) -> dict[str, Any]:
        """The checkpoint's state (and, prefixed, the summary's figures); empty before a choice."""
        if self.chosen is None:
            return {}
        return {
            "chosen": self.chosen,
            "configured": self.configured,
            "lr_before": self.lr_before,
            "lr_after": self.lr_after,
            "lr_rule": self.lr_rule,
            "candidates": [dict(r) for r in self.records],
            "profile": self.profile,
            "profile_file": str(self.profile_file) if self.profile_file else None,
            "search_J": self.search_J,
            "search_s": self.search_s,
            "memory_limit_bytes": self.memory_limit_bytes,
            "energy_source": self.energy_source,
            "not_tried": dict(self.dropped),
            "joint": self.joint,
            "limit_W": self.limit_W,
        }

    @classmethod
    def from_state(cls, saved: Mapping[str, Any]) -> Outcome:
        return cls(
            **{k: saved.get(k) for k in _PLAIN},
            records=[dict(r) for r in saved.get("candidates") or []],
            dropped=dict(saved.get("not_tried") or {}),
            joint=bool(saved.get("joint")),
            limit_W=saved.get("limit_W"),
            profile_file=Path(saved["profile_file"]) if saved.get("profile_file") else None,
        )


def candidate_record(
    m: CandidateMeasurement, choice: Choice | PairChoice | str, memory_limit_bytes: int | None
) -> dict[str, Any]:
    """One candidate as `batch_size/candidates` lists it: its figures, why it was out, its cost."""
    r = m.as_record()
    out = {k: r[k] for k in ("batch_size", "J_per_sample", "s_per_sample", "peak_memory_bytes", "oom")}
    if m.limit_W is not None:
        out["limit_W"] = m.limit_W
    out["infeasible"] = infeasible_reason(m, memory_limit_bytes)
    if isinstance(choice, Choice):
        out["cost"] = choice.costs.get(m.batch_size)
    elif isinstance(choice, PairChoice) and m.limit_W is not None:
        out["cost"] = choice.costs.get((m.batch_size, m.limit_W))
    return out


def _candidate_table(records: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{r['batch_size']}"
        + (f" at {r['limit_W']} W" if "limit_W" in r else "")
        + ": "
        + (
            f"{r['J_per_sample']:.4g} J, {r['s_per_sample']:.3g} s per sample"
            if r["infeasible"] is None
            else r["infeasible"]
        )
        for r in records
    )


def choice_line(o: Outcome, selector_text: str) -> str:
    """The one line that says what the finder chose, from what, and what it did to the LR."""
    estimate = (
        " (energy figures are ESTIMATES: energy source `estimate`)" if o.energy_source == "estimate" else ""
    )
    memory = "" if o.memory_limit_bytes is not None else "; memory not measured on the CPU"
    if o.dropped:
        memory += f"; not tried: {', '.join(o.dropped)} ({next(iter(o.dropped.values()))})"
    joint = f" and power limit {o.limit_W} W (joint search)" if o.joint else ""
    search = f"; search {o.search_J:.4g} J, {o.search_s:.3g} s" if o.search_J else ""
    return (
        f"batch_size: training at batch size {o.chosen}{joint} (configured {o.configured}), "
        f"chosen by {selector_text}{estimate} from the {o.profile} profile: "
        f"{_candidate_table(o.records)}{memory}; learning rate "
        f"{o.lr_before or float('nan'):.4g} -> {o.lr_after or float('nan'):.4g} "
        f"({o.lr_rule}){search}"
    )


def report_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The final table's rows: the size chosen (and limit), and what the search cost."""
    if summary.get("batch_size/chosen") is None:
        return []
    before, after = summary.get("batch_size/lr_before"), summary.get("batch_size/lr_after")
    lr = f"; lr {before:.3g} -> {after:.3g} ({summary.get('batch_size/lr_rule')})" if before and after else ""
    limit = summary.get("batch_size/limit_W")
    text = (
        f"{summary['batch_size/chosen']}{f' at {limit} W' if limit else ''} "
        f"(configured {summary.get('batch_size/configured')}; "
        f"{summary.get('batch_size/selector')}, {summary.get('batch_size/profile')} profile{lr})"
    )
    rows = [("batch size (batch_size)", text)]
    search_J = summary.get("batch_size/search_J")
    if search_J:
        estimate = " (estimate)" if summary.get("batch_size/energy_source") == "estimate" else ""
        rows.append(
            ("batch-size search", f"{search_J:.4g} J{estimate}, {summary['batch_size/search_s']:.3g} s")
        )
    return rows
