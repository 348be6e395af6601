"""Record the benchmark's baseline validation curves for the early-stop replay (no early stopping).

    python bench/early_stop_record.py --epochs 60 --seeds 0,1,2 --out bench/results/early-stop-curves.jsonl

One baseline run per task and seed (bench/energy_bench.py's tasks and baseline overrides, energy=estimate,
one torch thread), each appended as one JSON line as soon as it finishes: per epoch the validation
accuracy and loss and the cumulative energy. The tasks have no learning-rate schedule, so the first 20
or 40 epochs of a 60-epoch run are the 20- or 40-epoch run: one recording serves every length.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import energy_bench as eb  # noqa: E402

COLUMNS = {"acc": "val/acc", "loss": "val/loss", "J": "energy/total_J"}


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Per epoch: val/acc, val/loss and cumulative energy/total_J (last value within an epoch)."""
    by_epoch: dict[int, dict[str, float | None]] = {}
    for path in sorted(run_dir.glob("csv/**/metrics.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                epoch = eb._num(row.get("epoch"))
                if epoch is None:
                    continue
                slot = by_epoch.setdefault(int(epoch), dict.fromkeys(COLUMNS))
                for key, col in COLUMNS.items():
                    v = eb._num(row.get(col))
                    if v is not None:
                        slot[key] = v
    return [{"epoch": e, **by_epoch[e]} for e in sorted(by_epoch) if by_epoch[e]["acc"] is not None]


def record(task: str, seed: int, epochs: int, work: Path) -> dict[str, Any]:
    from wattwise.train import train
    from wattwise.utils.compose import compose_run_config

    t = eb.TASKS[task]
    overrides = [*t.overrides, f"trainer.max_epochs={epochs}", *eb.variant_overrides("baseline")]
    overrides += ["energy=estimate", *eb.COMMON, f"seed={seed}"]
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        run_dir = Path(tmp)
        cfg = compose_run_config(overrides, run_dir)
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            train(cfg)
        s = json.loads((run_dir / "summary.json").read_text())
        rows = read_rows(run_dir)
    return {
        "task": task,
        "seed": seed,
        "epochs": epochs,
        "test_acc": s.get("test/acc"),
        "energy_J": s.get("energy/total_J"),
        "energy_source": s.get("energy/source"),
        "curve": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tasks", default=",".join(eb.TASKS))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "early-stop-curves.jsonl")
    args = p.parse_args()
    eb.quiet()
    eb.pin_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wattwise-es-record-") as work:
        for seed in (int(s) for s in args.seeds.split(",")):
            for task in args.tasks.split(","):
                t0 = time.perf_counter()
                rec = record(task, seed, args.epochs, Path(work))
                with args.out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(
                    f"{task} seed {seed}: {len(rec['curve'])} epochs, {time.perf_counter() - t0:.0f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
