"""Thread policy benchmark: how much a CPU-bound neighbour slows the default run, per thread policy.

    python bench/thread_bench.py                      # default run, 5 repeats, 1 busy process
    python bench/thread_bench.py --busy 2 --repeats 7
    python bench/thread_bench.py --smoke              # a few batches, 1 repeat: checks the code path only

Two thread policies are compared: (a) torch's default (`cpu_threads=null`: as many intra-op
threads as torch picks, usually the number of cores) and (b) wattwise's `cpu_threads=auto` (the
cores other work leaves free when the run starts, see src/wattwise/utils/threads.py). Each is
timed alone and with `--busy` CPU-bound busy-loop processes running beside it; the figure is the
fit time (`time/train_s` from summary.json) with the neighbour relative to alone, paired within a
repeat, median over repeats. A policy that oversubscribes the cores typically slows down much
more than the neighbour's share of the CPU would explain.

Each fit runs in a fresh Python process (torch's thread count is process state), with
`energy=off`, `logger=none` and no progress bar; conditions are interleaved and their order
rotated per repeat. It is a benchmark, not a test: run it on an otherwise quiet machine.
Output: a table on stdout and bench/out/thread_bench-<time>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
COMMON = ["energy=off", "logger=none", "++callbacks.progress_bar=null", "++trainer.enable_progress_bar=false"]
SMOKE = [
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=3",
    "++trainer.limit_val_batches=1",
    "test=false",
]
BUSY_LOOP = "while True:\n    pass\n"


def worker(run_dir: Path, overrides: Sequence[str]) -> None:
    """One fit in this (fresh) process, threads as its cpu_threads override says; summary.json in run_dir."""
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from wattwise.train import train
    from wattwise.utils.compose import compose_run_config

    train(compose_run_config(list(overrides), run_dir))
    print(json.dumps({"torch_threads": torch.get_num_threads()}))


def fit_time(policy: str, overrides: Sequence[str], work: Path) -> tuple[float, int]:
    """(time/train_s, torch threads used) of one fit with `cpu_threads=<policy>` in a subprocess."""
    run_dir = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, __file__, "--worker", "--run-dir", str(run_dir), "--", *overrides]
    cmd.append(f"cpu_threads={policy}")
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT / "src")}
    env.pop("OMP_NUM_THREADS", None)  # policy (a) is torch's own default, not the caller's pin
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    if proc.returncode != 0:
        raise RuntimeError(f"fit failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    used = json.loads(proc.stdout.strip().splitlines()[-1])["torch_threads"]
    return float(json.loads((run_dir / "summary.json").read_text())["time/train_s"]), int(used)


def start_busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:  # only the processes this benchmark started, by their own handle
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", type=int, default=1, help="CPU-bound busy-loop processes beside the fit")
    p.add_argument("--repeats", type=int, default=None, help="rounds of all four conditions (default 5)")
    p.add_argument("--smoke", action="store_true", help="a few batches, 1 repeat: the code path only")
    p.add_argument("--out", type=Path, default=None, help="markdown (default bench/out/thread_bench-*.md)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="extra train.py overrides (default: the default run)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path | None:
    args = parse_args(argv)
    if args.worker:
        worker(args.run_dir, args.overrides)
        return None
    repeats = args.repeats or (1 if args.smoke else 5)
    overrides = [*COMMON, *(SMOKE if args.smoke else []), *args.overrides]
    policies = {"torch default (cpu_threads=null)": "null", "wattwise (cpu_threads=auto)": "auto"}
    conditions = [(p, busy) for p in policies for busy in (False, True)]
    times: dict[tuple[str, bool], list[float]] = {c: [] for c in conditions}
    used: dict[str, int] = {}
    print(f"thread bench: {len(conditions)} conditions x {repeats} repeats; busy processes: {args.busy}")
    with tempfile.TemporaryDirectory(prefix="wattwise-threads-") as work:
        fit_time("auto", [*overrides, *SMOKE], Path(work))  # untimed: warms the file cache
        for r in range(repeats):
            k = r % len(conditions)
            for policy, busy in [*conditions[k:], *conditions[:k]]:
                procs = start_busy(args.busy) if busy else []
                try:
                    if procs:
                        time.sleep(0.5)  # let the neighbour get going
                    t, used[policy] = fit_time(policies[policy], overrides, Path(work))
                finally:
                    stop_busy(procs)
                times[(policy, busy)].append(t)
                print(
                    f"  repeat {r} {policy:<34} {'with neighbour' if busy else 'alone':<15} {t:.2f} s",
                    flush=True,
                )
    lines = [
        "## wattwise thread policy benchmark",
        "",
        f"- cores: {os.cpu_count()}; busy-loop neighbours: {args.busy}; repeats: {repeats}"
        + ("; SMOKE settings (figures mean nothing)" if args.smoke else ""),
        f"- overrides: {' '.join(overrides)}",
        "- `slowdown`: fit time with the neighbour / alone, paired per repeat, median",
        "",
        "| policy | torch threads | alone s (median) | with neighbour s (median) | slowdown x |",
        "|---|---|---|---|---|",
    ]
    for policy in policies:
        alone, busy = times[(policy, False)], times[(policy, True)]
        slowdown = statistics.median(b / a for a, b in zip(alone, busy) if a > 0)
        lines.append(
            f"| {policy} | {used.get(policy)} | {statistics.median(alone):.2f} | "
            f"{statistics.median(busy):.2f} | {slowdown:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    out = args.out or OUT_DIR / f"thread_bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print("\n" + text + f"written to {out}")
    return out


if __name__ == "__main__":
    main()
