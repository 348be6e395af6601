"""Float against quantization-aware training (`+optim=qat`) on the energy benchmark's tasks.

    python bench/qat_bench.py                # 5 seeds x 2 tasks x 2 variants, ~5 min on 2 CPU cores
    python bench/qat_bench.py --quick        # smoke test: 1 seed, a few batches

For each seed, the baseline (float, 32-true, no method) and `+optim=qat` train on the same task
with the same seed, interleaved (the order alternates by seed), each run through
`wattwise.train.train` as energy_bench.py does. Reported, per task, as medians over seeds with
95% bootstrap intervals (bench/stats.py):

- training energy of the QAT run / the baseline's (paired by seed): what fake quantisation costs;
- test accuracy: baseline float, QAT fake-quantised, QAT's int8 model (points against the baseline);
- model size: int8 state dict / float state dict;
- inference energy per test sample: int8 / float (both copies of the QAT run's final net, each
  over the whole test set, measured by the run's energy monitor).

Energy is `energy=estimate` unless `--energy auto`: on a CPU that is CPU-seconds x watts, an
ESTIMATE, labelled so in the report. torch threads are pinned (1 by default).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import energy_bench as eb  # bench/energy_bench.py: tasks, run_once, thread pinning, machine()
import stats

TASKS = ("tabular+mlp", "mnist1d+cnn1d")
VARIANTS = {"baseline": ["optim=[]", "trainer.precision=32-true"], "qat": ["+optim=qat"]}
DEFAULT_SEEDS = 5


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 2 epochs of 3 batches, tiny data")
    p.add_argument("--seeds", type=int, default=None, help=f"seeds (default {DEFAULT_SEEDS}; quick 1)")
    p.add_argument("--tasks", default=None, help=f"comma list of {list(eb.TASKS)} (default {list(TASKS)})")
    p.add_argument("--energy", default="estimate", choices=["estimate", "auto"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--out", type=Path, default=None, help="markdown report (default bench/out/qat_bench-*.md)"
    )
    return p.parse_args(argv)


def _col(runs: list[dict[str, Any]], variant: str, key: str) -> dict[int, float | None]:
    return {r["seed"]: r.get(key) for r in runs if r["variant"] == variant and r.get("status") == "completed"}


def _ratio_within(runs: list[dict[str, Any]], num: str, den: str) -> stats.Estimate:
    """Median over QAT runs of num/den, two figures of the same run."""
    values = [
        r[num] / r[den]
        for r in runs
        if r["variant"] == "qat" and r.get("status") == "completed" and r.get(num) and r.get(den)
    ]
    return stats.median_ci(values)


def summarise(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for task in dict.fromkeys(r["task"] for r in runs):
        mine = [r for r in runs if r["task"] == task]
        base_acc = _col(mine, "baseline", "test/acc")
        rows.append(
            [
                task,
                stats.ratio_ci(
                    _col(mine, "qat", "energy/total_J"), _col(mine, "baseline", "energy/total_J")
                ).fmt(),
                stats.median_ci(list(base_acc.values())).fmt("{:.2f}", 100),
                stats.delta_ci(_col(mine, "qat", "test/acc"), base_acc).fmt("{:+.2f}"),
                stats.delta_ci(_col(mine, "qat", "qat/int8_test_acc"), base_acc).fmt("{:+.2f}"),
                _ratio_within(mine, "qat/int8_bytes", "qat/float_bytes").fmt(),
                _ratio_within(mine, "qat/int8_test_J_per_sample", "qat/float_test_J_per_sample").fmt(),
                str(sum(r.get("status") != "completed" for r in mine)),
            ]
        )
    return rows


def _line(s: dict[str, Any]) -> str:
    """One run's progress line."""
    if s.get("status") != "completed":
        return f"FAILED: {s.get('error')}"
    joules, acc = s.get("energy/total_J") or float("nan"), s.get("test/acc") or float("nan")
    text = f"{joules:.1f} J acc {100 * acc:.2f}%"
    if s.get("qat/int8_test_acc") is not None:
        text += f" int8 {100 * s['qat/int8_test_acc']:.2f}%"
    return text


HEADER = [
    "task",
    "train J qat/float",
    "float test acc %",
    "Δacc fake-quant pt",
    "Δacc int8 pt",
    "size int8/float",
    "infer J/sample int8/float",
    "failed",
]


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    import torch

    eb.quiet()
    threads = eb.pin_threads(args.threads)
    seeds = args.seeds or (1 if args.quick else DEFAULT_SEEDS)
    tasks = eb.choose_tasks(args.tasks or ",".join(TASKS), eb.TASKS, "qat_bench")
    extra = [f"energy={args.energy}", *eb.COMMON, *(eb.QUICK if args.quick else [])]
    total = seeds * len(tasks) * len(VARIANTS)
    print(
        f"qat bench: {len(VARIANTS)} variants x {len(tasks)} tasks x {seeds} seeds = {total} runs; {threads}"
    )
    out = args.out or eb.OUT_DIR / f"qat_bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs_file = out.with_suffix(".runs.jsonl")
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wattwise-qat-bench-") as work:
        for seed in range(seeds):
            for task, t in tasks.items():
                order = list(VARIANTS) if seed % 2 == 0 else list(reversed(VARIANTS))
                for variant in order:
                    epochs = [] if args.quick else [f"trainer.max_epochs={t.epochs}"]
                    overrides = [*t.overrides, *epochs, *VARIANTS[variant], f"seed={seed}", *extra]
                    s = eb.run_once(overrides, Path(work))
                    s.pop("curve", None)
                    record = {"task": task, "variant": variant, "seed": seed, **s}
                    runs.append(record)
                    with runs_file.open("a") as f:
                        f.write(json.dumps(record, default=str) + "\n")
                    print(
                        f"  [{len(runs)}/{total}] seed {seed} {task:<14} {variant:<8} {_line(s)}", flush=True
                    )
    sources = sorted({str(r.get("energy/source")) for r in runs if r.get("energy/source")})
    label = "ESTIMATE (CPU-seconds x watts)" if "estimate" in sources else "measured: " + ",".join(sources)
    table = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    table += ["| " + " | ".join(row) + " |" for row in summarise(runs)]
    text = "\n".join(
        [
            "## Float vs quantization-aware training (`+optim=qat`)",
            "",
            f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {eb.machine()}; torch {torch.__version__}; threads pinned: {threads}",
            f"- energy: {label}",
            f"- settings: {'QUICK (smoke test only)' if args.quick else 'full'}; {seeds} seed(s); variants "
            f"interleaved, order alternating by seed; extra overrides: {' '.join(extra)}",
            f"- wall time: {eb._fmt_s(time.perf_counter() - started)}",
            "- figures: medians over seeds, 95% bootstrap intervals [low, high]; `train J` and `Δacc` paired "
            "by seed against the float baseline; size and inference energy compare the int8 and float copies "
            "of the same QAT run.",
            "",
            *table,
            "",
        ]
    )
    out.write_text(text)
    print("\n" + text)
    return out


if __name__ == "__main__":
    main()
