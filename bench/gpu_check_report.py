"""What `make gpu-check` found, per method and task, from the runs' summary.json: pure functions only.

A row is one variant on one task: completed, stepped aside (the method's own `<name>/skipped`
reason), failed (the error line), or not run (why: the budget, or a step it needed). Its figures
are the method's own summary keys, J/sample against the baseline of the same check and task, and
the energy source, which must be NVML. tests/test_gpu_check.py feeds these functions fake summaries.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpu_check_plan import Step, Variant, fmt_s

NVML = "zeus-nvml"
READ_ONLY = (
    "The check never changes the card's power limit, clocks or modes: `power` runs with "
    "`callbacks.power.dry_run=true` and `WATTWISE_POWER_DRY_RUN=1` (it reports the limits it would "
    "try, sets none); the power limit is read, never set, before and after the runs."
)


@dataclass
class Record:
    """One step of the plan and what became of it."""

    step: Step
    skipped: str | None = None  # why it was not run
    rc: int | None = None
    seconds: float = 0.0
    summary: dict[str, Any] | None = None
    error_line: str | None = None  # from the process's output when summary.json has none

    @property
    def completed(self) -> bool:
        s = self.summary or {}
        return self.skipped is None and self.rc == 0 and s.get("status") == "completed"

    def error(self) -> str:
        s = self.summary or {}
        return str(s.get("error") or self.error_line or f"exit code {self.rc}, status {s.get('status')}")


@dataclass
class Row:
    variant: str
    task: str
    status: str  # completed | stepped aside | failed | not run
    detail: str = ""
    resume: str = ""
    source: str = ""
    J_per_sample: float | None = None
    x_baseline: float | None = None
    test_acc: float | None = None
    seconds: float = 0.0
    figures: dict[str, Any] | None = None


def method_figures(summary: Mapping[str, Any], prefixes: Sequence[str]) -> dict[str, Any]:
    """A method's own figures: the summary keys under its prefixes, less its status lines."""
    out = {}
    for key, value in summary.items():
        head, _, tail = key.partition("/")
        if head in prefixes and tail and tail not in ("status", "skipped"):
            out[key] = value
    return out


def stepped_aside(summary: Mapping[str, Any], members: Sequence[str]) -> list[str]:
    """`<name>: <reason>` for each member that stepped aside in this run."""
    return [
        f"{m}: {summary.get(f'{m}/skipped') or 'no reason recorded'}"
        for m in members
        if summary.get(f"{m}/status") == "skipped"
    ]


def resume_check(half: Record, resumed: Record) -> str:
    """Did the second half continue the first from its checkpoint (more steps, the checkpoint named)?"""
    if not half.completed:
        return "not checked: the first half did not complete"
    if not resumed.completed:
        return "not checked" if resumed.skipped else f"failed: {resumed.error()}"
    a, b = half.summary or {}, resumed.summary or {}
    from_ckpt = any(str(o).startswith("ckpt_path=") for o in b.get("overrides") or [])
    steps_a, steps_b = a.get("global_step") or 0, b.get("global_step") or 0
    if not from_ckpt:
        return "failed: the resumed run names no ckpt_path"
    if steps_b <= steps_a:
        return f"failed: global_step {steps_b} after the resume, {steps_a} before it"
    return f"ok: epoch {a.get('epochs')} -> {b.get('epochs')}, step {steps_a} -> {steps_b}"


def build_row(v: Variant, task: str, records: Sequence[Record], prefixes: Mapping[str, Sequence[str]]) -> Row:
    """One variant on one task from its records (the two halves of a resumed run, or one run)."""
    final = records[-1]
    row = Row(v.name, task, "not run", seconds=sum(r.seconds for r in records))
    if len(records) == 2:
        row.resume = resume_check(*records)
    bad = next((r for r in records if r.skipped is None and not r.completed), None)
    if bad is not None:
        where = {"half": "first half: ", "resumed": "after the resume: "}.get(bad.step.phase, "")
        row.status, row.detail = "failed", where + bad.error()
        return row
    if final.skipped is not None or not final.completed:
        row.detail = next(r.skipped for r in records if r.skipped)
        return row
    s = final.summary or {}
    aside = stepped_aside(s, v.members)
    row.status = "stepped aside" if aside and not v.recipe else "completed"
    row.detail = "; ".join(aside)
    row.source = str(s.get("energy/source", ""))
    row.J_per_sample, row.test_acc = s.get("energy/J_per_sample"), s.get("test/acc")
    row.figures = {k: val for m in v.members for k, val in method_figures(s, prefixes.get(m, (m,))).items()}
    return row


def build_rows(
    records: Sequence[Record], variants: Sequence[Variant], prefixes: Mapping[str, Sequence[str]]
) -> list[Row]:
    """Every variant on every task it was planned for, with J/sample against that task's baseline."""
    tasks = list(dict.fromkeys(r.step.task for r in records if r.step.task))
    rows = []
    for task in tasks:
        base = None
        for v in variants:
            mine = [r for r in records if r.step.task == task and r.step.variant == v.name]
            if not mine:
                continue
            row = build_row(v, task, mine, prefixes)
            if not v.members:
                base = row
            if base is not None and base.J_per_sample and row.J_per_sample:
                row.x_baseline = row.J_per_sample / base.J_per_sample
            rows.append(row)
    return rows


def problems(rows: Sequence[Row]) -> list[str]:
    """What makes the check fail: failed runs, resumes that did not continue, energy not from NVML."""
    out = [f"{r.variant} on {r.task}: {r.detail}" for r in rows if r.status == "failed"]
    out += [
        f"{r.variant} on {r.task}: resume {r.resume}"
        for r in rows
        if r.resume.startswith("failed") and r.status != "failed"  # a failed run is named once
    ]
    out += [
        f"{r.variant} on {r.task}: energy/source is {r.source or 'missing'}, not {NVML}"
        for r in rows
        if r.status in ("completed", "stepped aside") and r.source != NVML
    ]
    return out


def limit_changed(card: Mapping[str, Any]) -> bool:
    """Was the card's power limit read different after the runs than before them?"""
    return "power_limit_after_W" in card and card["power_limit_after_W"] != card.get("power_limit_before_W")


def all_problems(card: Mapping[str, Any], rows: Sequence[Row]) -> list[str]:
    extra = ["the card's power limit changed during the check"] if limit_changed(card) else []
    return [*problems(rows), *extra]


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def _figures_text(figures: Mapping[str, Any] | None) -> str:
    """The figures for the table; file paths and nested records stay in the CSV only."""
    shown = {
        k: v
        for k, v in (figures or {}).items()
        if not isinstance(v, dict) and not (isinstance(v, str) and v.startswith("/"))
    }
    return ", ".join(f"{k}={_num(v, '{:.4g}') if isinstance(v, float) else v}" for k, v in shown.items())


def rows_table(rows: Sequence[Row]) -> str:
    head = (
        "| method | task | status | why / error | resume | energy source | mJ/sample | x baseline "
        "| test acc % | s | the method's figures |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        cells = [
            r.variant,
            r.task,
            r.status,
            r.detail,
            r.resume,
            r.source,
            _num(r.J_per_sample and 1e3 * r.J_per_sample, "{:.3f}"),
            _num(r.x_baseline, "{:.3f}"),
            _num(r.test_acc and 100 * r.test_acc, "{:.2f}"),
            f"{r.seconds:.0f}",
            _figures_text(r.figures),
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def rows_csv(rows: Sequence[Row]) -> str:
    fields = [
        "variant",
        "task",
        "status",
        "detail",
        "resume",
        "energy_source",
        "J_per_sample",
        "x_baseline",
        "test_acc",
        "seconds",
        "figures",
    ]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(fields)
    for r in rows:
        figures = json.dumps(r.figures or {}, default=str)
        w.writerow(
            [
                r.variant,
                r.task,
                r.status,
                r.detail,
                r.resume,
                r.source,
                r.J_per_sample,
                r.x_baseline,
                r.test_acc,
                round(r.seconds, 1),
                figures,
            ]
        )
    return buf.getvalue()


def card_lines(card: Mapping[str, Any]) -> list[str]:
    """The head of the report: what the figures were measured on."""
    keys = {"name": "card", "driver": "driver", "cuda": "CUDA", "torch": "torch", "lightning": "lightning"}
    out = [f"- {label}: {card.get(k, 'unknown')}" for k, label in keys.items()]
    out.append(f"- wattwise commit: {card.get('commit', 'unknown')}")
    before, after = card.get("power_limit_before_W"), card.get("power_limit_after_W", "not read")
    out.append(f"- power limit before the runs: {before} W, after: {after} W (read only)")
    if limit_changed(card):
        out.append("- **the power limit CHANGED during the check**: something else set it, or a bug")
    return out


def report_text(
    card: Mapping[str, Any],
    rows: Sequence[Row],
    records: Sequence[Record],
    budget_s: float,
    used_s: float,
    idle_line: str,
    bench_section: Sequence[str] = (),
) -> str:
    """The markdown report: card, the read-only statement, per-method rows, problems, skips, bench."""
    found = all_problems(card, rows)
    skipped = [r for r in records if r.skipped]
    return "\n".join(
        [
            f"# wattwise GPU check: {card.get('name', 'unknown card')}",
            "",
            *card_lines(card),
            f"- {idle_line}",
            f"- time budget: {fmt_s(budget_s)}, used {fmt_s(used_s)}; steps skipped: {len(skipped)}",
            f"- result: {'PASS' if not found else f'FAIL ({len(found)} problem(s))'}",
            "",
            READ_ONLY,
            "",
            "## Every method on the card",
            "",
            rows_table(rows),
            "",
            "## Problems",
            "",
            *([f"- {p}" for p in found] or ["- none"]),
            "",
            "## Skipped",
            "",
            *([f"- {r.step.label}: {r.skipped}" for r in skipped] or ["- nothing"]),
            "",
            *bench_section,
        ]
    )


def idle_text(watts: float | None, source: str) -> str:
    if watts is None:
        return f"card idle power: not measured ({source})"
    return f"card idle power: {watts:.1f} W over the check's first seconds ({source}, read only)"


def _section(text: str, title: str) -> list[str]:
    """The lines of one `### title` section of energy_bench's report, its heading included."""
    lines = text.splitlines()
    if title not in lines:
        return []
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("### ")), len(lines))
    return lines[start:end]


def bench_section(rec: Record, notes: Sequence[str]) -> list[str]:
    """The energy bench's short form in the report: its results and verdicts, or why it did not run."""
    from pathlib import Path

    path = Path(rec.step.run_dir)
    head = ["## Energy benchmark, short form", "", f"- `{rec.step.label}`", *(f"- {n}" for n in notes)]
    if rec.skipped:
        return [
            *head,
            f"- not run: {rec.skipped}; run it alone: `python bench/gpu_check.py --parts bench`",
            "",
        ]
    if not rec.completed:
        return [*head, f"- failed: {rec.error()} (log: {path.with_suffix('.log').name})", ""]
    text = path.read_text() if path.exists() else ""
    body = [*_section(text, "### Results"), *_section(text, "### Verdicts")]
    return [*head, f"- full report: {path.name} (+ .csv, .json, plots)", "", *body]
