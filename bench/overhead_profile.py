"""Where the baseline's fit spends its CPU time: one wattwise baseline fit under cProfile (issue 24).

    python bench/overhead_profile.py                       # the default task
    python bench/overhead_profile.py --task tabular+mlp --top 15

The overhead benchmark (bench/overhead_bench.py) measures *how much* the loop costs against plain
PyTorch; this says *where*: after one untimed warm-up fit, the next fit of the same task (the
overhead benchmark's `baseline` loop: `train(cfg)` with `logger=none test=false`, one torch thread)
runs under cProfile, and the profile's own time is split
- by package, on exclusive time (`tottime`): torch (its Python and its C calls), Lightning (its
  Python: loops, hooks, logging, checkpoint logic), wattwise, matplotlib, the rest; and
- by named pieces, on inclusive time (`cumtime`): the checkpoint writes, the energy report's files,
  `LightningModule.log`, Lightning's callback-hook dispatch, the sanity check, the optimizer step.
cProfile adds a fixed cost to every Python call, so Python-heavy parts look larger than they are
unprofiled; read the shares, not the seconds. The figures are for one fit on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead_bench as ob  # noqa: E402

PACKAGES = (  # (label, a path fragment or C-call marker); the first that matches a function wins
    ("torch", "/torch/"),
    ("torch", "torch._C"),
    ("torch", "method 'run_backward'"),
    ("lightning", "/lightning/"),
    ("lightning", "/lightning_utilities/"),
    ("torchmetrics", "/torchmetrics/"),
    ("wattwise", "/wattwise/"),
    ("matplotlib", "/matplotlib/"),
)
PIECES = (  # (label, the function's file ending, its name): pstats keys, without line numbers
    (
        "optimizer step (Lightning's closure: forward, backward, step)",
        "precision/precision.py",
        "optimizer_step",
    ),
    (
        "callback hook dispatch (all callbacks' hooks, with what they do)",
        "trainer/call.py",
        "_call_callback_hooks",
    ),
    ("LightningModule.log / log_dict", "pytorch/core/module.py", "log"),
    ("checkpoint writes (serialise + atomic write)", "callbacks/model_checkpoint.py", "_save_checkpoint"),
    ("energy report's files (plot, model card)", "energy/report_callback.py", "_write_files"),
    ("sanity check", "trainer/trainer.py", "_run_sanity_check"),
)


def package_of(key: tuple[str, int, str]) -> str:
    text = f"{key[0]}:{key[2]}"
    return next((label for label, frag in PACKAGES if frag in text), "python and the rest")


def profile_fit(task: str, epochs: int | None, seed: int = 1) -> pstats.Stats:
    """One warm-up fit, then the profiled baseline fit of `task`."""
    import lightning as L

    t = ob.bench_tasks()[task]
    n = epochs or t.epochs
    with tempfile.TemporaryDirectory(prefix="wattwise-profile-") as tmp:
        ob.run_loop("baseline", t, n, 0, None, Path(tmp))  # imports, data, first-call costs
        cfg = ob.compose(t, n, seed, [], Path(tmp) / "run")
        profiler, original = cProfile.Profile(), L.Trainer.fit

        def fit(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            profiler.enable()
            try:
                return original(self, *args, **kwargs)
            finally:
                profiler.disable()

        L.Trainer.fit = fit
        try:
            ob.run_wattwise(cfg)
        finally:
            L.Trainer.fit = original
    return pstats.Stats(profiler)


def shares(stats: pstats.Stats) -> tuple[float, dict[str, float], dict[str, float]]:
    """(total profiled s, exclusive s per package, inclusive s per named piece)."""
    raw = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = sum(v[2] for v in raw.values())
    by_package: dict[str, float] = {}
    for key, v in raw.items():
        label = package_of(key)
        by_package[label] = by_package.get(label, 0.0) + v[2]
    pieces = {}
    for label, file_end, name in PIECES:
        pieces[label] = sum(v[3] for k, v in raw.items() if k[0].endswith(file_end) and k[2] == name)
    return total, by_package, pieces


def report(task: str, total: float, by_package: dict[str, float], pieces: dict[str, float]) -> str:
    lines = [
        f"### {task}: {total:.2f} s profiled",
        "",
        "| where (exclusive time) | s | share |",
        "|---|---|---|",
    ]
    for label, s in sorted(by_package.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {s:.2f} | {100 * s / total:.0f} % |")
    lines += ["", "| piece (inclusive time) | s | share |", "|---|---|---|"]
    lines += [f"| {label} | {s:.2f} | {100 * s / total:.0f} % |" for label, s in pieces.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="default", help=f"one of {', '.join(ob.bench_tasks())}")
    p.add_argument("--epochs", type=int, default=None, help="default: the task's own")
    p.add_argument("--top", type=int, default=0, help="also print the top N functions by exclusive time")
    args = p.parse_args(argv)
    if args.task not in ob.bench_tasks():
        raise SystemExit(f"--task: unknown {args.task} (known: {', '.join(ob.bench_tasks())})")
    import torch

    torch.set_num_threads(1)
    with ob.quiet():
        stats = profile_fit(args.task, args.epochs)
    text = report(args.task, *shares(stats))
    print(text)
    if args.top:
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):
            pstats.Stats(stats, stream=sink).sort_stats("tottime").print_stats(args.top)
        print(sink.getvalue())
    return text


if __name__ == "__main__":
    main()
