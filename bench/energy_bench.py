"""The standard energy benchmark (`make bench`): the default recipe against each energy option and `green`.

    python bench/energy_bench.py            # a few minutes on 2 CPU cores: 3 seeds, 10 epochs
    python bench/energy_bench.py --quick    # a smoke test for CI (1 seed, a few batches; figures meaningless)

Every option in conf/optim/*.yaml is run alone, plus `green` (all of them), against the
baseline `optim=[]`, on two workloads: the default recipe (digits + MLP) and digits + CNN
(a conv net, where channels_last and pruning have something to work on). Variants are
interleaved within each round (A B C, then C B A, ...), each round uses its own seed, and the
table gives medians plus *paired* ratios: variant / baseline of the same round, then the median.

Energy comes from the run's EnergyMonitor with `energy=estimate` by default (reproducible on
shared machines; the table says so); `--energy auto` uses Zeus where it can read a counter.
torch runs on one thread. The markdown table goes to stdout and to bench/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
OUT_DIR = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "src"))  # this checkout's package, installed or not

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLCONFIGDIR", "/tmp/wattwise-mpl")

WORKLOADS = {
    "digits+mlp": ["data=digits", "model=mlp"],  # the default recipe
    "digits+cnn": ["data=digits", "model=cnn"],
}
# Plumbing that is the same for every variant and only adds noise: no progress bar, no logger files.
COMMON = ["logger=none", "++callbacks.progress_bar=null", "++trainer.enable_progress_bar=false"]
QUICK = [
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=3",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
]


def discover_options(conf_dir: Path = CONF_DIR) -> list[str]:
    """The energy options in conf/optim, each alone (green last, when present)."""
    names = sorted(p.stem for p in (conf_dir / "optim").glob("*.yaml"))
    return [n for n in names if n != "green"] + (["green"] if "green" in names else [])


def compose(overrides: Sequence[str], run_dir: Path) -> Any:
    """The real conf/ composed with `overrides`, as `python train.py <overrides>` would see it."""
    from wattwise.utils.compose import compose_run_config

    return compose_run_config(overrides, run_dir)


def quiet() -> None:
    """Keep the bench's output to its own progress lines and table."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "wattwise", "zeus"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_variant(overrides: Sequence[str], work_dir: Path) -> dict[str, Any]:
    """Train once in this process; return the run's summary.json (or the failure)."""
    from wattwise.train import train

    run_dir = Path(tempfile.mkdtemp(dir=work_dir))
    cfg = compose(overrides, run_dir)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            train(cfg)
    except (Exception, SystemExit) as err:  # one failing option must not sink the whole benchmark
        last = [line for line in sink.getvalue().splitlines() if line.strip()][-1:]
        summary_path = run_dir / "summary.json"
        s = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        s.update(
            status="failed", error=s.get("error") or (last[0] if last else f"{type(err).__name__}: {err}")
        )
        return s
    return json.loads((run_dir / "summary.json").read_text())


def _median(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(records: list[dict[str, Any]], variants: Sequence[str]) -> list[dict[str, Any]]:
    """One row per workload and variant: medians over rounds and paired ratios against the baseline."""
    rows = []
    for workload in dict.fromkeys(r["workload"] for r in records):
        base = {r["round"]: r for r in records if r["workload"] == workload and r["variant"] == "baseline"}
        for variant in variants:
            runs = [r for r in records if r["workload"] == workload and r["variant"] == variant]
            ok = [r for r in runs if r.get("status") == "completed"]
            row: dict[str, Any] = {"workload": workload, "variant": variant, "runs": f"{len(ok)}/{len(runs)}"}
            if not ok:
                row["error"] = runs[0].get("error", "failed") if runs else "not run"
                rows.append(row)
                continue
            row["energy_J"] = _median([r.get("energy/total_J") for r in ok])
            row["J_per_sample"] = _median([r.get("energy/J_per_sample") for r in ok])
            row["time_s"] = _median([r.get("time/train_s") for r in ok])
            row["test_acc"] = _median([r.get("test/acc") for r in ok])
            row["source"] = ",".join(sorted({str(r.get("energy/source")) for r in ok}))
            paired_e, paired_t, paired_acc = [], [], []
            for r in ok:
                b = base.get(r["round"])
                if not b or b.get("status") != "completed":
                    continue
                if r.get("energy/total_J") and b.get("energy/total_J"):
                    paired_e.append(r["energy/total_J"] / b["energy/total_J"])
                if r.get("time/train_s") and b.get("time/train_s"):
                    paired_t.append(r["time/train_s"] / b["time/train_s"])
                if r.get("test/acc") is not None and b.get("test/acc") is not None:
                    paired_acc.append(100 * (r["test/acc"] - b["test/acc"]))
            row["energy_x"] = _median(paired_e)
            row["time_x"] = _median(paired_t)
            row["acc_delta_pt"] = _median(paired_acc)
            rows.append(row)
    return rows


COLUMNS = [
    ("workload", "workload", "{}"),
    ("variant", "variant", "{}"),
    ("runs", "runs ok", "{}"),
    ("energy_J", "energy J", "{:.1f}"),
    ("J_per_sample", "mJ/sample", "{:.3f}"),
    ("time_s", "time s", "{:.2f}"),
    ("test_acc", "test acc %", "{:.2f}"),
    ("energy_x", "energy x", "{:.2f}"),
    ("time_x", "time x", "{:.2f}"),
    ("acc_delta_pt", "Δacc pt", "{:+.2f}"),
    ("source", "energy source", "{}"),
]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            if value is None:
                cells.append("failed: " + str(row.get("error", ""))[:80] if key == "energy_J" else "")
            elif key == "J_per_sample":
                cells.append(fmt.format(value * 1e3))
            elif key == "test_acc":
                cells.append(fmt.format(value * 100))
            else:
                cells.append(fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke test: 1 seed, 1 epoch of 3 batches")
    p.add_argument("--seeds", type=int, default=None, help="rounds, one seed each (default 3; quick 1)")
    p.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the recipe's 10)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {list(WORKLOADS)}")
    p.add_argument(
        "--variants", default=None, help="comma list (default: baseline + every conf/optim option)"
    )
    p.add_argument("--energy", default="estimate", choices=["estimate", "auto", "off"])
    p.add_argument(
        "--out", type=Path, default=None, help="markdown file (default bench/out/energy_bench-*.md)"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    quiet()
    import torch

    torch.set_num_threads(1)  # the CPU's speed swings; one thread keeps runs comparable
    seeds = args.seeds or (1 if args.quick else 3)
    variants = args.variants.split(",") if args.variants else ["baseline", *discover_options()]
    workloads = {w: WORKLOADS[w] for w in args.workloads.split(",")}
    extra = [f"energy={args.energy}", *COMMON, *(QUICK if args.quick else [])]
    if args.epochs:
        extra.append(f"trainer.max_epochs={args.epochs}")
    total = seeds * len(workloads) * len(variants)
    print(
        f"energy bench: {len(variants)} variants x {len(workloads)} workloads x {seeds} seeds = {total} runs"
    )
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wattwise-bench-") as work:
        for wl_overrides in workloads.values():  # untimed: the first fit in a process pays start-up
            run_variant([*wl_overrides, "optim=[]", *extra, *QUICK], Path(work))
        for rnd in range(seeds):
            order = variants if rnd % 2 == 0 else list(reversed(variants))  # A B C, C B A: cancels drift
            for workload, wl_overrides in workloads.items():
                for variant in order:
                    optim = "optim=[]" if variant == "baseline" else f"+optim={variant}"
                    overrides = [*wl_overrides, optim, f"seed={rnd}", *extra]
                    s = run_variant(overrides, Path(work))
                    records.append({"workload": workload, "variant": variant, "round": rnd, **s})
                    status = s.get("status")
                    detail = (
                        f"{s.get('energy/total_J', float('nan')):.1f} J  "
                        f"{s.get('time/train_s', float('nan')):.2f} s  "
                        f"acc {100 * s.get('test/acc', float('nan')):.1f}%"
                        if status == "completed"
                        else f"FAILED: {s.get('error')}"
                    )
                    print(
                        f"  [{len(records)}/{total}] seed {rnd} {workload:<11} {variant:<10} {detail}",
                        flush=True,
                    )
    rows = summarise(records, variants)
    sources = sorted({str(r.get("energy/source")) for r in records if r.get("energy/source")})
    methods = sorted({str(r.get("energy_method")) for r in records if r.get("energy_method")})
    settings = "quick (1 epoch of 3 batches; figures are a smoke test only)" if args.quick else "full"
    header = [
        "## wattwise standard energy benchmark",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}; torch {torch.__version__}, 1 thread",
        f"- energy source: {', '.join(sources) or 'none'}"
        + (" (an ESTIMATE, not a measurement)" if "estimate" in sources else ""),
        *(f"- how: {m}" for m in methods),
        f"- settings: {settings}; {seeds} seed(s), variants interleaved per round; "
        f"extra overrides: {' '.join(extra)}",
        "- energy/time/acc: medians over seeds; `energy x`, `time x`, `Δacc pt`: medians of per-round "
        "ratios/differences against the baseline of the same round",
        f"- wall time of the benchmark: {time.perf_counter() - started:.0f} s",
        "",
        "",
    ]
    text = "\n".join(header) + markdown_table(rows) + "\n"
    out = args.out or OUT_DIR / f"energy_bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "runs": records}, indent=1, default=str))
    print("\n" + text)
    print(f"written to {out}")
    return out


if __name__ == "__main__":
    main()
