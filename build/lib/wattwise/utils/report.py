"""The table printed at the end of a run: the figures a person wants at a glance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _fmt_J(j: float) -> str:
    if j >= 3.6e6:
        return f"{j / 3.6e6:.3f} kWh"
    if j >= 1e3:
        return f"{j / 1e3:.2f} kJ"
    return f"{j:.1f} J"


def _fmt_small_J(j: float) -> str:
    return f"{j * 1e3:.2f} mJ" if j < 1 else f"{j:.2f} J"


def _option_rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One line per energy method that ran, saying what it did: each method's own `report_rows`."""
    from wattwise.optim.registry import method_classes

    return [row for cls in method_classes().values() for row in cls.report_rows(s)]


def format_report(s: Mapping[str, Any]) -> str:
    """Render a summary dict (see utils/summary.py) as a short aligned table."""
    rows: list[tuple[str, str]] = []
    if (acc := s.get("test/acc")) is not None:
        rows.append(("test accuracy", f"{100 * acc:.2f} %"))
    elif (acc := s.get("val/acc")) is not None:
        rows.append(("val accuracy", f"{100 * acc:.2f} %"))
    source = s.get("energy/source", "off")
    total = s.get("energy/total_J")
    if total is not None:
        label = "measured" if str(source).startswith("zeus") else "ESTIMATE"
        rows.append(("energy", f"{_fmt_J(total)}  ({label}, source: {source})"))
        if s.get("energy/avg_W") is not None:
            rows.append(("average power", f"{s['energy/avg_W']:.1f} W"))
        if s.get("energy/J_per_sample") is not None:
            rows.append(("energy / train sample", _fmt_small_J(s["energy/J_per_sample"])))
    else:
        rows.append(("energy", f"not measured (source: {source})"))
    if s.get("time/train_s") is not None:
        rows.append(("wall time (fit)", f"{s['time/train_s']:.1f} s"))
    if s.get("carbon/gCO2e") is not None:
        rows.append(("CO2e", f"{s['carbon/gCO2e']:.4f} g  (at {s.get('grid_gCO2_per_kWh', '?')} gCO2e/kWh)"))
    if s.get("cpu_threads") is not None:
        rows.append(("cpu threads", f"{s['cpu_threads']} ({s.get('cpu_threads_reason', '')})"))
    rows += _option_rows(s)
    width = max(len(k) for k, _ in rows)
    title = f"wattwise run [{s.get('status', '?')}]  {s.get('run_dir', '')}"
    lines = [title, "-" * min(len(title), 78)]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    if s.get("energy_method"):
        lines.append(f"  ({s['energy_method']})")
    return "\n".join(lines)
