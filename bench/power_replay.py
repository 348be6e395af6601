"""Replay `+optim=power` on Zeus's published power traces with injected noise (no training, no GPU).

    python bench/power_replay.py                  # 3 % noise, both noise models, energy and zeus_cost
    python bench/power_replay.py --noise 0.05 --seeds 4

Every row set of tests/data/zeus_traces (V100, A40, RTX 6000, P100) runs through the fake card
of tests/fake_gpu_trace.py, seeded, while the real tuner chooses (the profile settings below).
For each, the true cost at the chosen limit is compared with the trace's optimum: the table gives
the worst, 95th percentile and mean excess. `zeus-like` is the same profiler with one window per
limit, no confirmation and no safer-limit rule: Zeus's way of choosing, on the same grid. Noise
models: `step` (independent per step: more steps average it away) and `drift` (AR(1), rho 0.95:
a slow wander that more steps do not). This is how the noise bounds in
the power card (methods/power/README.md) were found.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

SETTINGS = {"wait_steps": 1, "warmup_steps": 2, "profile_steps": 40}


def excess(selector: str, noise: float, rho: float, seeds: int, zeus_like: bool) -> list[float]:
    import wattwise.methods.shared.zeus_adapter as adapter

    adapter.ZEUSD_DEFAULT_SOCKET = Path("/nonexistent/zeusd.sock")  # never a real daemon
    from fake_gpu_trace import CARDS, TraceGPU, replay, row_sets, spacing_W, trace_optimum

    import wattwise.methods.power.choose as choose
    from wattwise.methods.power.callback import Power

    choose.Z_SAFER = 0.0 if zeus_like else 1.0
    out = []
    for card in CARDS:
        for rows in row_sets(card).values():
            if len(rows) < 3:
                continue

            def cost(limit: int, rows=rows) -> float:
                t, p = rows[limit]
                return t * p if selector == "energy" else 0.5 * t * p + 0.5 * max(rows) * t

            for seed in range(seeds):
                tuner = Power(
                    selector=selector,
                    pl_step_W=spacing_W(rows),
                    blocks=1 if zeus_like else 4,
                    confirm=not zeus_like,
                    **SETTINGS,
                )
                replay(tuner, TraceGPU(rows, noise=noise, rho=rho, seed=seed), max_batches=5000)
                out.append(cost(tuner.chosen_limit_W) / cost(trace_optimum(rows, selector)) - 1)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--noise", type=float, default=0.03)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"noise {args.noise:.0%}, {args.seeds} seeds per row set, {SETTINGS}")
    print("| noise model | selector | chooser | replays | worst | p95 | mean |")
    print("|---|---|---|---|---|---|---|")
    for model, rho in (("step", 0.0), ("drift", 0.95)):
        for selector in ("energy", "zeus_cost"):
            for zeus_like in (False, True):
                x = excess(selector, args.noise, rho, args.seeds, zeus_like)
                name = "zeus-like" if zeus_like else "wattwise"
                p95 = x[int(0.95 * len(x))]
                print(
                    f"| {model} | {selector} | {name} | {len(x)} | {x[-1]:+.1%} | {p95:+.1%} "
                    f"| {statistics.fmean(x):+.2%} |"
                )


if __name__ == "__main__":
    main()
