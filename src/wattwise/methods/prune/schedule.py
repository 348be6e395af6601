"""The pruning schedule: how much of the final channel ratio is reached after each prune."""

from __future__ import annotations

SCHEDULES = ("cubic", "linear")


def schedule_ratios(final_ratio: float, n_steps: int, kind: str = "cubic") -> list[float]:
    """Cumulative channel ratio after k = 0..n_steps prunes (against the original widths).

    cubic (Zhu & Gupta 2017): r_k = R (1 - (1 - k/n)^3), most channels go early while the net is
    still plastic; linear: r_k = R k/n.
    """
    out = []
    for k in range(n_steps + 1):
        p = k / n_steps if n_steps else 1.0
        out.append(final_ratio * (p if kind == "linear" else 1.0 - (1.0 - p) ** 3))
    return out
