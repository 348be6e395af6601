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
    from wattwise.methods.registry import method_classes

    return [row for cls in method_classes().values() for row in cls.report_rows(s)]


def _carbon_rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """CO2e with the intensity and where it came from; the facility's energy where a PUE is set."""
    intensity = s.get("carbon/intensity_gCO2_per_kWh", "?")
    rows = []
    if (pue := s.get("energy/pue")) is not None and pue != 1.0 and s.get("energy/facility_J") is not None:
        rows.append(("energy x PUE", f"{_fmt_J(s['energy/facility_J'])}  (PUE {pue:g})"))
    at = f"{intensity:.1f}" if isinstance(intensity, int | float) else str(intensity)
    rows.append(("CO2e", f"{s['carbon/gCO2e']:.4f} g  (at {at} gCO2e/kWh)"))
    if s.get("carbon/intensity_source"):
        rows.append(("grid intensity from", str(s["carbon/intensity_source"])))
    return rows


def _forecast_rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The early forecast and how close it came; why a budget stopped the fit; SLURM's own figure."""
    rows = []
    if (total := s.get("forecast/total_J")) is not None:
        text = (
            f"{_fmt_J(total)}, {s.get('forecast/time_s', 0):.0f} s, {s.get('forecast/gCO2e', 0):.4g} g CO2e "
            f"for {s.get('forecast/epochs')} epochs ({s.get('forecast/bound')})"
        )
        if (err := s.get("forecast/error_pct")) is not None:
            text += f"; error {err:+.1f} % energy"
            if (terr := s.get("forecast/time_error_pct")) is not None:
                text += f", {terr:+.1f} % time"
        rows.append((f"forecast (epoch {s.get('forecast/after_epochs')})", text))
    if s.get("forecast/stop_reason"):
        rows.append(("stopped", str(s["forecast/stop_reason"])))
    if s.get("slurm/job_id") is not None:
        consumed = s.get("slurm/consumed_energy_J")
        text = (
            f"{_fmt_J(consumed)} (job {s['slurm/job_id']})"
            if consumed is not None
            else str(s.get("slurm/note"))
        )
        rows.append(("SLURM sacct energy", text))
    return rows


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _metric_rows(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Accuracy where the module logs it; otherwise the monitored metric and every test metric."""
    if (acc := s.get("test/acc")) is not None:
        return [("test accuracy", f"{100 * acc:.2f} %")]
    if (acc := s.get("val/acc")) is not None and s.get("monitor") in (None, "val/acc"):
        return [("val accuracy", f"{100 * acc:.2f} %")]
    rows = [(k, f"{s[k]:.4g}") for k in sorted(s) if k.startswith("test/") and _number(s[k])]
    monitor = s.get("monitor")
    if monitor and _number(s.get(monitor)):
        rows.append((f"{monitor} (monitored, {s.get('mode', '?')})", f"{s[monitor]:.4g}"))
    return rows


def format_report(s: Mapping[str, Any]) -> str:
    """Render a summary dict (see utils/summary.py) as a short aligned table."""
    rows: list[tuple[str, str]] = _metric_rows(s)
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
        rows += _carbon_rows(s)
    rows += _forecast_rows(s)
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
