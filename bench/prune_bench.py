"""Pruning benchmark: no pruning vs Lightning's ModelPruning (masks) vs ours (+optim=prune), CPU.

Each run is `python train.py ...` in a subprocess with one torch thread (OMP_NUM_THREADS=1),
`energy=estimate` (this machine has no energy counter: the figures are estimates, labelled so).
Variants are interleaved and their order rotated per seed (A B C, B C A, C A B), so the CPU's
speed swings hit all of them; we report medians and ratios against the baseline of the same run.

Step time is timed per training batch by `StepTimer` as the process's CPU time (one thread;
robust to other jobs sharing the CPU, which inflate wall time) and as wall time, summarised as
the median over the last `--last-epochs` epochs, i.e. after the schedule ends.

    python bench/prune_bench.py                      # CNN on digits, defaults of +optim=prune, 3 seeds
    python bench/prune_bench.py --seeds 1 --epochs 4 # quick look
    python bench/prune_bench.py --model resnet18     # small-width ResNet-18 on synthetic 32x32 data
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
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelPruning

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


class StepTimer(L.Callback):
    """Times each training batch; at fit end writes step times per epoch and the nets' zero fraction."""

    def __init__(self, out_file: str) -> None:
        self.out_file = out_file
        self.times: dict[int, list[float]] = {}  # CPU seconds of the process per batch
        self.wall: dict[int, list[float]] = {}  # wall seconds per batch
        self._t0 = self._c0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.times.setdefault(trainer.current_epoch, []).append(time.process_time() - self._c0)
        self.wall.setdefault(trainer.current_epoch, []).append(time.perf_counter() - self._t0)

    def on_fit_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        weights = [
            m.weight for m in pl_module.net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
        ]
        total = sum(w.numel() for w in weights)
        zeros = sum(int((w == 0).sum()) for w in weights)
        Path(self.out_file).write_text(
            json.dumps(
                {
                    "step_s": self.times,
                    "wall_s": self.wall,
                    "zero_fraction": zeros / max(total, 1),
                    "weights": total,
                }
            )
        )


class ScheduledMasking(ModelPruning):
    """Lightning's ModelPruning (global L1 unstructured masks) on the same cubic schedule as ours.

    At the end of epoch e (= before our prune at the start of epoch e+1) the cumulative sparsity
    goes to s_k = final * (1 - (1 - k/n)^3); torch.nn.utils.prune applies `amount` to the weights
    still unmasked, so each call asks for 1 - (1 - s_k) / (1 - s_{k-1}).
    """

    def __init__(self, final_sparsity: float, start_epoch: int, end_epoch: int) -> None:
        n = end_epoch - start_epoch + 1
        cum = [final_sparsity * (1 - (1 - k / n) ** 3) for k in range(n + 1)]
        steps = {start_epoch - 1 + k: 1 - (1 - cum[k]) / (1 - cum[k - 1]) for k in range(1, n + 1)}
        super().__init__(
            "l1_unstructured",
            amount=lambda epoch: steps.get(epoch, 0.0),
            apply_pruning=lambda epoch: epoch in steps,
            use_lottery_ticket_hypothesis=False,
            make_pruning_permanent=True,
            verbose=0,
        )


def run(args: list[str], run_dir: Path, threads: int) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{BENCH}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "WANDB_MODE": "offline",
        "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR", "/tmp/wattwise-mpl"),
    }
    timer_file = run_dir / "step_times.json"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        *args,
        "energy=estimate",
        "logger=none",
        "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false",
        "+callbacks.step_timer._target_=prune_bench.StepTimer",
        f"+callbacks.step_timer.out_file={timer_file}",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    timing = json.loads(timer_file.read_text())
    return {"summary": summary, "timing": timing}


def dense_macs_params(model: str) -> tuple[int, int]:
    import torch_pruning as tp

    from wattwise.models import CNN, ResNet18

    if model == "cnn":
        net, x = CNN((1, 8, 8), 10, (32, 64)), torch.randn(1, 1, 8, 8)
    else:
        net, x = ResNet18((3, 32, 32), 10, width=16), torch.randn(1, 3, 32, 32)
    macs, params = tp.utils.count_ops_and_params(net, x)
    return int(macs), int(params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["cnn", "resnet18"], default="cnn")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the config's)")
    ap.add_argument("--last-epochs", type=int, default=3, help="epochs at the end whose step times count")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ns = ap.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    torch.set_num_threads(ns.threads)
    if ns.model == "cnn":
        base = ["model=cnn"]  # digits, the defaults of conf/model/cnn.yaml
        start, end = 1, 4
    else:
        base = [
            "model=resnet18",
            "model.net.width=16",
            "data=synthetic",
            "data.num_samples=1280",
            "data.batch_size=128",
            "trainer.max_epochs=8",
        ]
        start, end = 1, 4
    if ns.epochs is not None:
        base.append(f"trainer.max_epochs={ns.epochs}")
    base_macs, base_params = dense_macs_params(ns.model)

    variants = {"none": [], "ModelPruning": None, "ours": ["+optim=prune"]}
    results: dict[str, list[dict]] = {v: [] for v in variants}
    tmp = Path(tempfile.mkdtemp(prefix="prune_bench_"))
    order = list(variants)
    final_sparsity = None
    for i in range(ns.seeds):
        seed = 42 + i
        rotated = order[i % 3 :] + order[: i % 3]
        if "ours" in rotated and final_sparsity is None:  # ours first once, to match its sparsity
            rotated.remove("ours")
            rotated.insert(0, "ours")
        for name in rotated:
            extra = variants[name]
            if extra is None:
                extra = [
                    "+callbacks.masking._target_=prune_bench.ScheduledMasking",
                    f"+callbacks.masking.final_sparsity={final_sparsity:.4f}",
                    f"+callbacks.masking.start_epoch={start}",
                    f"+callbacks.masking.end_epoch={end}",
                ]
            r = run([*base, *extra, f"seed={seed}"], tmp / f"{name}-{seed}", ns.threads)
            if name == "ours" and final_sparsity is None:
                s = r["summary"]
                final_sparsity = 1 - s["prune/params"] / s["prune/base_params"]
            results[name].append(r)
            s = r["summary"]
            print(
                f"seed {seed} {name:>12}: test/acc {s.get('test/acc', float('nan')):.4f} "
                f"energy {s['energy/total_J']:.1f} J (estimate) fit {s['time/train_s']:.1f} s",
                flush=True,
            )

    def last_step_s(r: dict, key: str = "step_s") -> float:
        per_epoch = {int(k): v for k, v in r["timing"][key].items()}
        epochs = sorted(per_epoch)[-ns.last_epochs :]
        return statistics.median([t for e in epochs for t in per_epoch[e]])

    med = statistics.median
    table = {}
    for name, runs in results.items():
        sums = [r["summary"] for r in runs]
        table[name] = {
            "macs": med([s.get("prune/macs", base_macs) for s in sums]),
            "params": med([s.get("prune/params", base_params) for s in sums]),
            "zero_fraction": med([r["timing"]["zero_fraction"] for r in runs]),
            "step_ms": 1e3 * med([last_step_s(r) for r in runs]),
            "step_wall_ms": 1e3 * med([last_step_s(r, "wall_s") for r in runs]),
            "energy_J": med([s["energy/total_J"] for s in sums]),
            "fit_s": med([s["time/train_s"] for s in sums]),
            "test_acc": med([s["test/acc"] for s in sums]),
            "test_acc_all": [s["test/acc"] for s in sums],
        }
    # per-seed ratios against the baseline of the same seed, then the median
    ratios = {}
    for name in ("ModelPruning", "ours"):
        ratios[name] = {
            "step_speedup": med(
                [last_step_s(b) / last_step_s(v) for b, v in zip(results["none"], results[name])]
            ),
            "step_speedup_wall": med(
                [
                    last_step_s(b, "wall_s") / last_step_s(v, "wall_s")
                    for b, v in zip(results["none"], results[name])
                ]
            ),
            "energy_ratio": med(
                [
                    v["summary"]["energy/total_J"] / b["summary"]["energy/total_J"]
                    for b, v in zip(results["none"], results[name])
                ]
            ),
            "acc_delta_points": 100
            * med(
                [
                    v["summary"]["test/acc"] - b["summary"]["test/acc"]
                    for b, v in zip(results["none"], results[name])
                ]
            ),
        }
    print(f"\nmodel={ns.model} seeds={ns.seeds} threads={ns.threads} energy=estimate (not a measurement)")
    print(
        f"{'variant':>12} | MACs | params | zero w | step CPU ms (wall ms), last {ns.last_epochs} ep "
        "| energy J | test acc"
    )
    for name, t in table.items():
        print(
            f"{name:>12} | {t['macs'] / 1e6:.3f} M | {t['params'] / 1e3:.1f} k | {t['zero_fraction']:.2f} | "
            f"{t['step_ms']:.2f} ({t['step_wall_ms']:.2f}) | {t['energy_J']:.1f} | "
            f"{100 * t['test_acc']:.2f} %"
        )
    for name, r in ratios.items():
        print(
            f"{name:>12} vs none: MACs {base_macs / table[name]['macs']:.2f}x fewer, "
            f"step {r['step_speedup']:.2f}x faster (CPU time; wall {r['step_speedup_wall']:.2f}x), "
            f"energy x{r['energy_ratio']:.2f}, "
            f"test acc {r['acc_delta_points']:+.2f} points"
        )
    if ns.out:
        ns.out.write_text(
            json.dumps({"args": vars(ns) | {"out": str(ns.out)}, "table": table, "ratios": ratios}, indent=2)
        )


if __name__ == "__main__":
    main()
