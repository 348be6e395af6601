"""The overhead benchmark (`make overhead-bench`): CPU-seconds of wattwise's training loop against the
same training in plain PyTorch and in bare Lightning, and the net's arithmetic floor (issue 24).

    python bench/overhead_bench.py                # 5 interleaved repeats of every task and loop (run alone)
    python bench/overhead_bench.py --quick        # 2 repeats of 2 epochs: a smoke test, figures rough
    python bench/overhead_bench.py --tasks default --loops plain,baseline --repeats 9

For each task (the default run of train.yaml, and the energy benchmark's three tasks: 1D CNN, GRU,
tabular MLP; bench/energy_bench.py TASKS) the same net, data, batch size, optimizer and epochs are
trained by
- `plain`: a PyTorch loop (the datamodule's own loaders; zero_grad/backward/step; after every
  epoch an argmax validation over the validation loader);
- `lightning`: a bare LightningModule (cross-entropy, validation accuracy logged once an epoch)
  in a Trainer with no logger, progress bar, checkpointing, model summary or callbacks;
- `baseline`: wattwise's own run, `train(cfg)` on the package's configs exactly as
  `python train.py logger=none test=false` composes it (energy monitor, energy report, checkpoints,
  progress display, metrics);
- `green`: the same with `+optim=green` (the energy methods' recipe; a profile cache is never
  shared between runs, as in the energy benchmark).
The figure is the process's CPU time (`time.process_time`, all threads) from the start of the fit
(the datamodule's set-up included) to its end: for wattwise the whole `Trainer.fit` call (set-up,
sanity check, hooks, checkpoints, the energy report's files), not the build before it or the summary
after it. torch runs on one thread. The loops run interleaved, the order rotated by one per repeat,
after one untimed warm-up of each (imports, data cache); each repeat uses `seed=<repeat>` for every
loop. Medians over repeats with 95% bootstrap intervals (bench/stats.py); `x plain` is the median
of the per-repeat ratios to the plain loop of the same repeat.

The arithmetic floor: the FLOPs of the fit (`torch.utils.flop_counter` over one training step,
forward and backward, and one validation forward, times the steps and validation batches) at the
matmul rate one thread reaches here (a timed square matmul), in CPU-seconds.

Outputs: a terminal table, bench/out/overhead_bench-<time>.md and .json (bench/out is git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))  # this checkout's package, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/stats.py, bench/energy_bench.py

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/wattwise-mpl")

import energy_bench  # noqa: E402  (bench/energy_bench.py: its tasks, variants and table forms)
import stats  # noqa: E402  (bench/stats.py)
from stats import rotated  # noqa: E402  (loops in the order of a repeat)

LOOPS = ("plain", "lightning", "baseline", "green")
# --ablate: the baseline with one piece of wattwise's loop taken out each, then all of them: the
# difference to the baseline is what that piece costs (where the overhead over bare Lightning goes).
ABLATIONS: dict[str, tuple[str, ...]] = {
    "no_ckpt": ("callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null"),
    "no_report": ("callbacks.energy_report=null",),
    "no_energy": ("energy=off",),
    "no_progress": ("callbacks.progress_bar=null", "++trainer.enable_progress_bar=false"),
    "no_sanity": ("++trainer.num_sanity_val_steps=0",),
}
ABLATIONS["stripped"] = tuple(o for name in list(ABLATIONS) for o in ABLATIONS[name])
DEFAULT_REPEATS = 5
QUICK_REPEATS = 2
QUICK_EPOCHS = 2


@dataclass(frozen=True)
class OverheadTask:
    overrides: tuple[str, ...]
    epochs: int


def bench_tasks() -> dict[str, OverheadTask]:
    """The default run (train.yaml's data, model and epochs) and the energy benchmark's tasks."""
    tasks = {"default": OverheadTask((), 10)}
    for name, t in energy_bench.TASKS.items():
        tasks[name] = OverheadTask(t.overrides, t.epochs)
    return tasks


# ---- the pure part: records -> rows -> tables ------------------------------------------------------
def summarise(records: Sequence[dict[str, Any]], loops: Sequence[str]) -> list[dict[str, Any]]:
    """One row per task and loop: median CPU-seconds and the median of the per-repeat ratios to
    `plain` (both with bootstrap intervals); then the task's arithmetic floor where it was measured.

    A record is {task, loop, repeat, cpu_s} (cpu_s None: the run failed, counted in `failed`), or
    {task, loop: "floor", cpu_s, gflop, rate_gflops} for the floor."""
    rows: list[dict[str, Any]] = []
    for task in dict.fromkeys(r["task"] for r in records):
        mine = [r for r in records if r["task"] == task]
        by_repeat = {
            loop: {r["repeat"]: r["cpu_s"] for r in mine if r["loop"] == loop and r.get("cpu_s") is not None}
            for loop in loops
        }
        plain = by_repeat.get("plain", {})
        baseline = by_repeat.get("baseline", {})
        plain_median = stats.median_ci(list(plain.values())).value if plain else None
        for loop in loops:
            runs = [r for r in mine if r["loop"] == loop]
            if not runs:
                continue
            values = list(by_repeat[loop].values())
            rows.append(
                {
                    "task": task,
                    "loop": loop,
                    "runs": len(runs),
                    "failed": len(runs) - len(values),
                    "cpu_s": stats.median_ci(values),
                    "x_plain": stats.ratio_ci(by_repeat[loop], plain),
                    "x_baseline": stats.ratio_ci(by_repeat[loop], baseline) if baseline else None,
                    "error": next((r.get("error") for r in runs if r.get("error")), None),
                }
            )
        floor = next((r for r in mine if r["loop"] == "floor"), None)
        if floor is not None and floor.get("cpu_s") is not None:
            x = floor["cpu_s"] / plain_median if plain_median else None
            rows.append(
                {
                    "task": task,
                    "loop": "floor",
                    "runs": 1,
                    "failed": 0,
                    "cpu_s": stats.Estimate(floor["cpu_s"], None, None, 1),
                    "x_plain": stats.Estimate(x, None, None, 1) if x is not None else None,
                    "note": f"{floor['gflop']:.2f} GFLOP at {floor['rate_gflops']:.1f} GFLOP/s",
                }
            )
    return rows


HEADERS = ("task", "loop", "CPU s", "x plain", "x baseline", "runs ok", "note")


def table_cells(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    def est(e: Any, spec: str) -> str:
        return e.fmt(spec) if isinstance(e, stats.Estimate) else ""

    out = [list(HEADERS)]
    for r in rows:
        note = r.get("note") or (f"failed: {str(r['error'])[:70]}" if r.get("error") else "")
        ok = f"{r['runs'] - r['failed']}/{r['runs']}"
        x_base = est(r.get("x_baseline"), "{:.2f}")
        out.append(
            [r["task"], r["loop"], est(r["cpu_s"], "{:.2f}"), est(r["x_plain"], "{:.2f}"), x_base, ok, note]
        )
    return out


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    return energy_bench.markdown_grid(table_cells(rows))


def terminal_table(rows: Sequence[dict[str, Any]]) -> str:
    return energy_bench.terminal_grid(table_cells(rows))


# ---- the loops ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def cpu_timer() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    t0 = time.process_time()
    try:
        yield out
    finally:
        out["cpu_s"] = time.process_time() - t0


QUIET_LOGGERS = (
    "lightning", "lightning.pytorch", "lightning.fabric", "wattwise", "zeus",
    "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
)  # fmt: skip


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Warnings and library logs off while the bench runs, and put back after it (the bench also runs
    inside the test process, whose later tests read those loggers)."""
    import lightning  # noqa: F401  (its loggers are set up on import; quieted after)
    import torch

    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            for name in QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        torch.set_num_threads(threads)


def compose(task: OverheadTask, epochs: int, seed: int, extra: Sequence[str], run_dir: Path) -> Any:
    from wattwise.utils.compose import compose_run_config

    overrides = [
        *task.overrides,
        f"trainer.max_epochs={epochs}",
        f"seed={seed}",
        "logger=none",
        "test=false",
        "cpu_threads=null",  # left as the bench pinned it
        *extra,
    ]
    return compose_run_config(overrides, run_dir)


def parts(cfg: Any) -> tuple[Any, Any, Any]:
    """(datamodule, net, optimizer factory) of the run `cfg` describes, built as train.py builds them."""
    import lightning as L

    from wattwise.utils.instantiate import build_datamodule, build_module

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg.model, datamodule)
    return datamodule, module.net, module.optimizer_factory


def run_plain(cfg: Any, limit_batches: int | None) -> float:
    import torch
    import torch.nn.functional as F

    datamodule, net, optimizer_factory = parts(cfg)
    epochs = int(cfg.trainer.max_epochs)
    with cpu_timer() as t:
        datamodule.setup("fit")
        train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
        optimizer = optimizer_factory(params=[p for p in net.parameters() if p.requires_grad])
        for _ in range(epochs):
            net.train()
            for i, (x, y) in enumerate(train_loader):
                if limit_batches is not None and i >= limit_batches:
                    break
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                optimizer.step()
            net.eval()
            correct = seen = 0
            with torch.no_grad():
                for i, (x, y) in enumerate(val_loader):
                    if limit_batches is not None and i >= limit_batches:
                        break
                    correct += int((net(x).argmax(dim=1) == y).sum())
                    seen += len(y)
    return t["cpu_s"]


def run_lightning(cfg: Any, limit_batches: int | None) -> float:
    import lightning as L
    import torch
    import torch.nn.functional as F

    datamodule, net, optimizer_factory = parts(cfg)

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.correct = self.seen = 0

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.correct += int((self.net(x).argmax(dim=1) == y).sum())
            self.seen += len(y)

        def on_validation_epoch_end(self) -> None:
            self.log("val/acc", self.correct / max(1, self.seen))
            self.correct = self.seen = 0

        def configure_optimizers(self) -> Any:
            return optimizer_factory(params=[p for p in self.net.parameters() if p.requires_grad])

    limits = (
        {}
        if limit_batches is None
        else {"limit_train_batches": limit_batches, "limit_val_batches": limit_batches}
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=int(cfg.trainer.max_epochs),
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[],
        **limits,
    )
    with cpu_timer() as t:
        trainer.fit(Bare(), datamodule=datamodule)
    return t["cpu_s"]


@contextlib.contextmanager
def timed_fit() -> Iterator[dict[str, float]]:
    """CPU-seconds of the `Trainer.fit` calls made inside (wattwise's own fit, in `train(cfg)`)."""
    import lightning as L

    out = {"cpu_s": 0.0}
    original = L.Trainer.fit

    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            out["cpu_s"] += time.process_time() - t0

    L.Trainer.fit = fit
    try:
        yield out
    finally:
        L.Trainer.fit = original


def run_wattwise(cfg: Any) -> float:
    from wattwise.train import train

    sink = io.StringIO()
    with timed_fit() as t, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        train(cfg)
    return t["cpu_s"]


def loop_overrides(loop: str, limit_batches: int | None) -> list[str]:
    limits = (
        []
        if limit_batches is None
        else [
            f"++trainer.limit_train_batches={limit_batches}",
            f"++trainer.limit_val_batches={limit_batches}",
        ]
    )
    if loop == "green":
        return [*energy_bench.variant_overrides("green"), *limits]
    return [*ABLATIONS.get(loop, ()), *limits]


def run_loop(loop: str, task: OverheadTask, epochs: int, seed: int, limit: int | None, work: Path) -> float:
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        cfg = compose(task, epochs, seed, loop_overrides(loop, limit), Path(tmp))
        if loop == "plain":
            return run_plain(cfg, limit)
        if loop == "lightning":
            return run_lightning(cfg, limit)
        return run_wattwise(cfg)


# ---- the floor -----------------------------------------------------------------------------------------
def matmul_rate_gflops(n: int = 512, seconds: float = 0.5) -> float:
    """GFLOP/s of a float32 n x n matmul on this thread count (process CPU time)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.process_time() - t0) / 1e9


def fit_flops(cfg: Any, limit_batches: int | None) -> float:
    """FLOPs of the fit: one training step (forward + backward) and one validation forward, counted by
    torch's flop counter, times the steps and validation batches of `cfg`'s epochs."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    datamodule, net, _ = parts(cfg)
    datamodule.setup("fit")
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    steps, val_batches = len(train_loader), len(val_loader)
    if limit_batches is not None:
        steps, val_batches = min(steps, limit_batches), min(val_batches, limit_batches)
    x, y = next(iter(train_loader))
    net.train()
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()
    train_flops = counter.get_total_flops()
    xv, _ = next(iter(val_loader))
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(xv)
    val_flops = counter.get_total_flops()
    return float(cfg.trainer.max_epochs) * (steps * train_flops + val_batches * val_flops)


# ---- main ----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} repeats of {QUICK_EPOCHS} epochs")
    p.add_argument(
        "--repeats", type=int, default=None, help=f"interleaved repeats (default {DEFAULT_REPEATS})"
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs of every task (default: the task's own)")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    p.add_argument(
        "--loops",
        default=",".join(LOOPS),
        help=f"comma-separated, of {', '.join(LOOPS)}, or an ablation: {', '.join(ABLATIONS)}",
    )
    p.add_argument(
        "--ablate",
        action="store_true",
        help="the loops plain, lightning, baseline and every ablation (what each piece of the loop costs)",
    )
    p.add_argument("--limit-batches", type=int, default=None, help="at most this many batches per epoch")
    p.add_argument("--no-floor", action="store_true", help="skip the arithmetic floor")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--out", type=Path, default=None, help="report path (default bench/out/overhead_bench-<time>.md)"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> Path:
    with quiet():
        return _main(parse_args(argv), log)


def _main(args: argparse.Namespace, log: Callable[[str], None]) -> Path:
    import torch

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_interop_threads(1)
    all_tasks = bench_tasks()
    names = args.tasks.split(",") if args.tasks else list(all_tasks)
    unknown = [n for n in names if n not in all_tasks]
    if unknown:
        raise SystemExit(f"--tasks: unknown {', '.join(unknown)} (known: {', '.join(all_tasks)})")
    loops = ["lightning", "baseline", *ABLATIONS] if args.ablate else args.loops.split(",")
    if [lp for lp in loops if lp not in (*LOOPS, *ABLATIONS)] or not loops:
        raise SystemExit(f"--loops: each of {', '.join(LOOPS)} or {', '.join(ABLATIONS)}")
    if "plain" not in loops:
        loops.insert(0, "plain")  # every ratio is to it
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)

    def epochs_of(t: OverheadTask) -> int:
        return args.epochs or (QUICK_EPOCHS if args.quick else t.epochs)

    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    rate = None if args.no_floor else matmul_rate_gflops()
    head = f"overhead bench: {len(names)} tasks x {len(loops)} loops x {repeats} repeats"
    log(f"{head}, {args.threads} thread(s)" + (f"; matmul {rate:.1f} GFLOP/s" if rate else ""))
    with tempfile.TemporaryDirectory(prefix="wattwise-overhead-") as tmp:
        work = Path(tmp)
        for name in names:  # untimed warm-up: imports, data cache, first-call costs
            for loop in loops:
                run_loop(loop, all_tasks[name], 1, 0, args.limit_batches or 2, work)
            if rate:
                t = all_tasks[name]
                cfg = compose(t, epochs_of(t), 0, [], work / "floor")
                gflop = fit_flops(cfg, args.limit_batches) / 1e9
                records.append(
                    {
                        "task": name,
                        "loop": "floor",
                        "cpu_s": gflop / rate,
                        "gflop": gflop,
                        "rate_gflops": rate,
                    }
                )
        for rep in range(repeats):
            for name in names:
                t = all_tasks[name]
                for loop in rotated(loops, rep):
                    record: dict[str, Any] = {"task": name, "loop": loop, "repeat": rep}
                    try:
                        record["cpu_s"] = run_loop(loop, t, epochs_of(t), rep, args.limit_batches, work)
                    except (Exception, SystemExit) as err:  # noqa: BLE001 - one failing loop must not sink it
                        record["cpu_s"], record["error"] = None, f"{type(err).__name__}: {err}"
                    records.append(record)
                    figure = (
                        f"{record['cpu_s']:.2f} CPU s" if record["cpu_s"] is not None else record["error"]
                    )
                    log(f"  [{rep + 1}/{repeats}] {name:<14} {loop:<11} {figure}")
    rows = summarise(records, loops)
    out = args.out or OUT_DIR / f"overhead_bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    import platform

    settings = (
        f"QUICK ({repeats} repeats, {QUICK_EPOCHS} epochs; rough)"
        if args.quick
        else f"{repeats} repeats, each task's epochs"
    )
    if args.epochs:
        settings += f"; --epochs {args.epochs}"
    if args.limit_batches:
        settings += f"; --limit-batches {args.limit_batches}"
    text = "\n".join(
        [
            "## wattwise overhead benchmark",
            "",
            f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch "
            f"{torch.__version__}, {args.threads} thread(s)",
            f"- settings: {settings}; loops interleaved, order rotated per repeat",
            "- CPU s: process CPU-seconds of the fit (median over repeats, 95% bootstrap interval); x plain, "
            "x baseline: median of the per-repeat ratios to the plain PyTorch loop, to wattwise's baseline; "
            "ablations (no_*): the baseline less one piece; floor: the fit's FLOPs at one "
            "thread's matmul rate",
            f"- wall time of the benchmark: {time.perf_counter() - started:.0f} s",
            "",
            markdown_table(rows),
            "",
        ]
    )
    out.write_text(text)
    plain = [{k: (v.__dict__ if isinstance(v, stats.Estimate) else v) for k, v in r.items()} for r in rows]
    out.with_suffix(".json").write_text(
        json.dumps({"rows": plain, "records": records}, indent=1, default=str)
    )
    log("\n" + terminal_table(rows))
    log(f"\nReport: {out}")
    return out


if __name__ == "__main__":
    main()
