"""Run identical jobs one after the other in this process, as a Hydra multirun's basic launcher does,
and print, per job, the modules first imported inside its energy window (a one-time cost of the
process that would land in that job's joules). Used by tests/test_sweep.py in a fresh process.

    python tests/position_probe.py <dir> <jobs> <warmup: true|false> [overrides...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    from hydra.core.global_hydra import GlobalHydra

    from wattwise.energy import meter
    from wattwise.train import train
    from wattwise.utils.compose import compose_run_config

    root, jobs, warmup, extra = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    window: dict[str, set[str]] = {}
    begin, end = meter.EnergyMeter.begin, meter.EnergyMeter.end

    def spy_begin(self, key):  # noqa: ANN001
        if key == "wattwise.segment" and "begin" not in window:
            window["begin"] = set(sys.modules)
        return begin(self, key)

    def spy_end(self, key):  # noqa: ANN001
        reading = end(self, key)
        if key == "wattwise.segment":
            window["end"] = set(sys.modules)
        return reading

    meter.EnergyMeter.begin, meter.EnergyMeter.end = spy_begin, spy_end
    out = []
    for job in range(jobs):
        window.clear()
        overrides = ["hydra.mode=MULTIRUN", f"warmup={warmup}", *extra]
        train(compose_run_config(overrides, root / str(job), root=root))
        GlobalHydra.instance().clear()
        out.append(sorted(window["end"] - window["begin"]))
    print("PROBE " + json.dumps(out))


if __name__ == "__main__":
    main()
