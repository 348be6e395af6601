"""Energy-aware early stopping vs fixed-epoch training vs Lightning's EarlyStopping.

The default recipe (digits, MLP, CPU), `trainer.max_epochs=40`, several seeds. For every seed the
three variants run back to back in a rotating order (A B C, B C A, C A B, ...), so drifts in the
machine's speed hit all of them alike. Reported: medians of energy, epochs and test accuracy, and
the medians of the per-seed ratios / differences against fixed-epoch training.

    fixed      trainer.max_epochs epochs, the best checkpoint (by val/acc) tested
    lightning  + lightning.pytorch.callbacks.EarlyStopping(monitor=val/loss, mode=min, patience=3),
               Lightning's default patience on the usual metric
    ours       +optim=early_stop with its defaults
    ours_patient  the same with callbacks.early_stop.diminishing_patience=3 (one epoch more patience)

Energy is `energy=estimate` (12 W x process CPU-seconds): on a CPU-only machine there is no counter,
so the figures are an ESTIMATE and are labelled as such. Torch is pinned to one thread.

    python bench/early_stop_bench.py                 # 5 seeds (100..104), ~2 minutes on one core
    python bench/early_stop_bench.py --seeds 10 --out bench/out/early_stop.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VARIANTS: dict[str, list[str]] = {
    "fixed": [],
    "lightning": [
        "+callbacks.lightning_es._target_=lightning.pytorch.callbacks.EarlyStopping",
        "+callbacks.lightning_es.monitor=val/loss",
        "+callbacks.lightning_es.mode=min",
        "+callbacks.lightning_es.patience=3",
    ],
    "ours": ["+optim=early_stop"],
    # the same with one more epoch of patience: how much the default's extra saving costs
    "ours_patient": ["+optim=early_stop", "callbacks.early_stop.diminishing_patience=3"],
}


def compose(run_dir: Path, overrides: list[str]):
    """The real conf/ composed as a command-line run would be, writing into run_dir."""
    from wattwise.utils.compose import compose_run_config

    return compose_run_config(overrides, run_dir)


def run_one(variant: str, seed: int, max_epochs: int, work: Path) -> dict:
    from wattwise.train import train

    run_dir = work / f"{variant}-seed{seed}"
    overrides = [
        "energy=estimate",
        "logger=none",
        "trainer=cpu",
        f"trainer.max_epochs={max_epochs}",
        "+trainer.enable_progress_bar=false",
        "++callbacks.progress_bar=null",
        f"seed={seed}",
        *VARIANTS[variant],
    ]
    cfg = compose(run_dir, overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg)
    s = json.loads((run_dir / "summary.json").read_text())
    return {
        "variant": variant,
        "seed": seed,
        "energy_J": s["energy/total_J"],
        "energy_source": s["energy/source"],
        "epochs": s["epochs"],
        "test_acc": s["test/acc"],
        "stop_reason": s.get("stop/reason"),
    }


def summarize(rows: list[dict]) -> dict:
    by = {v: {r["seed"]: r for r in rows if r["variant"] == v} for v in VARIANTS}
    seeds = sorted(by["fixed"])
    out = {}
    for v in VARIANTS:
        runs = [by[v][s] for s in seeds]
        out[v] = {
            "energy_J": statistics.median(r["energy_J"] for r in runs),
            "epochs": statistics.median(r["epochs"] for r in runs),
            "test_acc_pct": 100 * statistics.median(r["test_acc"] for r in runs),
            "energy_ratio": statistics.median(
                r["energy_J"] / by["fixed"][r["seed"]]["energy_J"] for r in runs
            ),
            "acc_diff_pts": 100
            * statistics.median(r["test_acc"] - by["fixed"][r["seed"]]["test_acc"] for r in runs),
            "stop_reasons": sorted({str(r["stop_reason"]) for r in runs}),
        }
    ours, fixed, light = out["ours"], out["fixed"], out["lightning"]
    out["goals"] = {
        ">=30% less energy than fixed": ours["energy_ratio"] <= 0.70,
        "<=0.5 points accuracy lost vs fixed": ours["acc_diff_pts"] >= -0.5
        and ours["test_acc_pct"] >= fixed["test_acc_pct"] - 0.5,
        "less energy than Lightning EarlyStopping": ours["energy_ratio"] < light["energy_ratio"],
        "accuracy at least Lightning's": ours["test_acc_pct"] >= light["test_acc_pct"]
        and ours["acc_diff_pts"] >= light["acc_diff_pts"],
    }
    return out


def table(summary: dict, n_seeds: int, max_epochs: int, source: str) -> str:
    lines = [
        f"digits, MLP, CPU, trainer.max_epochs={max_epochs}, {n_seeds} seeds interleaved; "
        f"energy source: {source} (ESTIMATE: 12 W x process CPU-seconds)",
        "",
        "| variant | energy (J, median) | energy vs fixed (median ratio) | epochs (median) "
        "| test acc % (median) | acc vs fixed (median diff, points) | stop reasons |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        s = summary[v]
        lines.append(
            f"| {v} | {s['energy_J']:.1f} | {s['energy_ratio']:.2f} | {s['epochs']:g} | "
            f"{s['test_acc_pct']:.2f} | {s['acc_diff_pts']:+.2f} | {', '.join(s['stop_reasons'])} |"
        )
    lines.append("")
    lines += [f"- {goal}: {'yes' if ok else 'NO'}" for goal, ok in summary["goals"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "early_stop.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "wattwise"):
        logging.getLogger(name).setLevel(logging.WARNING)

    names = list(VARIANTS)
    rows: list[dict] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wattwise-es-bench-") as tmp:
        for i, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
            order = names[i % len(names) :] + names[: i % len(names)]
            for variant in order:
                row = run_one(variant, seed, args.max_epochs, Path(tmp))
                rows.append(row)
                print(
                    f"seed {seed} {variant:9s} {row['energy_J']:7.1f} J  {row['epochs']:3d} epochs  "
                    f"test acc {100 * row['test_acc']:.2f}%  {row['stop_reason']}",
                    flush=True,
                )
    summary = summarize(rows)
    source = ", ".join(sorted({r["energy_source"] for r in rows}))
    text = table(summary, args.seeds, args.max_epochs, source)
    print("\n" + text)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows, "summary": summary}, indent=2)
    )


if __name__ == "__main__":
    main()
