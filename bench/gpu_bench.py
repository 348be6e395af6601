"""GPU energy benchmark: joules per sample of a CIFAR-style ResNet-18, strict fp32 -> `green`.

    python bench/gpu_bench.py              # ~2-3 minutes on one H100
    python bench/gpu_bench.py --quick      # ~1 minute
    python bench/gpu_bench.py --cpu-smoke  # tiny, on the CPU: checks the code path only, figures meaningless
    python bench/gpu_bench.py --overhead-only  # part 3 alone, with more pairs (~1 minute)

What it runs, each through wattwise's own build (the real conf/, the real callbacks):
  1. Throughput and energy on synthetic 32x32 images held on the GPU by `+optim=data_cache`
     (the same cache a user gets; added to every variant, so the loader is never the
     bottleneck): strict fp32 (TF32 off for matmuls and convolutions), PyTorch defaults (TF32 for
     convolutions only), `+optim=amp`, `+optim=prune` and `+optim=green` when those options exist.
     Variants are interleaved per round (A B C, then C B A); the first epochs of each fit are
     warm-up (and pruning, scheduled to end before them), the "steady" figures are medians over
     the last two epochs (early stopping may not stop before them), ratios are paired per round.
  2. Accuracy on a real (small) task: scikit-learn digits with the same ResNet-18, strict fp32 vs
     `green` (the whole recipe: its early stopping and pruning act here), a few seeds.
  3. The energy monitor's overhead: the same fit with `energy=auto` vs `energy=off`, interleaved,
     plus the cost of one counter window times the two windows the monitor opens per epoch.

Energy comes from the run's EnergyMonitor (`energy=auto`: the GPU's NVML counter via Zeus). The
benchmark is read-only towards the card: it never sets power limits or clocks, and it leaves the
power-tuning option (`power`) out, also from `green`. Joules per sample include each epoch's
validation pass, as `energy/J_per_sample` does in every run.
Prints the card's name and markdown tables; writes them to bench/out/ (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning as L  # noqa: E402
import torch  # noqa: E402
from energy_bench import OUT_DIR, quiet  # noqa: E402

from wattwise.methods.registry import option_names  # noqa: E402
from wattwise.utils.compose import compose_run_config as compose  # noqa: E402

NEVER_RUN = {"power": "changes the card's power limit; this benchmark is read-only towards the card"}

# steady_from: the first epoch (0-based) counted as steady; pruning is scheduled to end before it.
SETTINGS = {
    "full": dict(
        rounds=2, samples=24576, epochs=5, steady_from=3, acc_seeds=3, acc_epochs=12, overhead_pairs=3
    ),
    "quick": dict(
        rounds=1, samples=12288, epochs=4, steady_from=2, acc_seeds=1, acc_epochs=8, overhead_pairs=2
    ),
    "cpu-smoke": dict(
        rounds=1, samples=192, epochs=3, steady_from=2, acc_seeds=1, acc_epochs=1, overhead_pairs=1
    ),
}
_RUN_IDS = itertools.count()
# The EnergyMonitor closes one counter window per epoch (src/wattwise/energy/monitor.py).
WINDOWS_PER_EPOCH = 1
TORCH_DEFAULTS = (
    torch.backends.cuda.matmul.allow_tf32,
    torch.backends.cudnn.allow_tf32,
    torch.get_float32_matmul_precision(),
)


def set_fp32_mode(strict: bool) -> None:
    """strict: TF32 off everywhere; otherwise PyTorch's own defaults (TF32 for convolutions only)."""
    matmul, cudnn, precision = (False, False, "highest") if strict else TORCH_DEFAULTS
    torch.set_float32_matmul_precision(precision)
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochClock(L.Callback):
    """Wall time of each training epoch (one device sync per epoch boundary, never per step)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.epoch_s, self._t0 = device, [], 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sync(self.device)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sync(self.device)
        self.epoch_s.append(time.perf_counter() - self._t0)


def fit_once(
    overrides: Sequence[str], strict: bool, device: torch.device, work: Path, steady_from: int = 1
) -> dict[str, Any]:
    """Build from the real config, fit on device-resident data (`data_cache`), test; return the figures."""
    from wattwise.energy import find_energy_monitor
    from wattwise.methods.data_cache.callback import DataCache
    from wattwise.train import build

    run_dir = work / f"run{next(_RUN_IDS)}"
    cfg = compose(overrides, run_dir)
    parts = build(cfg)
    trainer, module, data = parts["trainer"], parts["module"], parts["datamodule"]
    if not any(isinstance(cb, DataCache) for cb in trainer.callbacks):  # green already holds it
        trainer.callbacks.append(DataCache(device="auto"))  # the product's resident data, every variant
    clock = EpochClock(device)
    trainer.callbacks.append(clock)
    set_fp32_mode(strict)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            sync(device)
            t0 = time.perf_counter()
            trainer.fit(module, datamodule=data)
            sync(device)
            fit_s = time.perf_counter() - t0
            test = trainer.test(module, datamodule=data, verbose=False)
    finally:
        set_fp32_mode(False)
    monitor = find_energy_monitor(trainer)
    epochs = len(clock.epoch_s)
    out: dict[str, Any] = {
        "fit_s": fit_s,
        "epoch_s": statistics.median(clock.epoch_s[steady_from:] or clock.epoch_s) if clock.epoch_s else None,
        "test_acc": float(test[0]["test/acc"]) if test else None,
        "source": monitor.source if monitor else "off",
        "precision": str(trainer.precision),
        "epochs": epochs,
    }
    if monitor is None or monitor.total_J is None or not monitor.samples_seen:
        return out
    per_epoch = monitor.samples_seen / max(1, len(monitor.epoch_energies_J))
    pairs = list(zip(monitor.epoch_energies_J, clock.epoch_s))
    steady = pairs[steady_from:] or pairs  # early stopping may end a fit before the steady epochs
    out.update(
        J_per_sample=statistics.median(j for j, _ in steady) / per_epoch,
        fit_J_per_sample=monitor.total_J / monitor.samples_seen,
        samples_per_s=per_epoch / statistics.median(s for _, s in steady),
        W=statistics.median(j / s for j, s in steady),
        monitor=monitor,
    )
    return out


def _composes(overrides: Sequence[str], callback: str) -> bool:
    """Does this variant's config hold callbacks.<callback> (e.g. does green include prune)?"""
    import tempfile

    cfg = compose(list(overrides), Path(tempfile.gettempdir()) / "wattwise-gpu-bench-probe")
    return cfg.callbacks.get(callback) is not None


def window_cost_s(monitor: Any, repeats: int = 20) -> float:
    """Seconds for one close-and-reopen of the run's own meter window (what a boundary costs)."""
    meter = monitor.meter
    t0 = time.perf_counter()
    for _ in range(repeats):
        meter.begin("wattwise.bench")
        meter.end("wattwise.bench")
    return (time.perf_counter() - t0) / repeats


def _med(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def describe_card(device: torch.device) -> str:
    if device.type != "cuda":
        return "no GPU (CPU smoke run)"
    name = torch.cuda.get_device_name(device)
    cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
    text = f"{name} (compute capability {cap}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    with contextlib.suppress(Exception):  # read-only NVML queries
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        driver = pynvml.nvmlSystemGetDriverVersion()
        limit_W = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
        driver = driver.decode() if isinstance(driver, bytes) else driver
        text += f", driver {driver}, power limit {limit_W:.0f} W"
    return text + ")"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one round, smaller: about a minute")
    mode.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU to check the code path")
    p.add_argument("--overhead-only", action="store_true", help="only part 3 (monitor overhead), 6 pairs")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", type=Path, default=None, help="markdown file (default bench/out/gpu_bench-*.md)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:  # noqa: C901 - one linear script
    args = parse_args(argv)
    quiet()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.ERROR)
    mode = "cpu-smoke" if args.cpu_smoke else "quick" if args.quick else "full"
    s = dict(SETTINGS[mode])
    if args.overhead_only:
        s["overhead_pairs"] = max(s["overhead_pairs"], 6)
    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("gpu_bench: no CUDA GPU visible (use --cpu-smoke to check the code path on a CPU)")
    if args.cpu_smoke:
        torch.set_num_threads(1)
    device = torch.device("cpu") if args.cpu_smoke else torch.device("cuda", torch.cuda.current_device())
    card = describe_card(device)
    print(f"gpu_bench [{mode}] on {card}", flush=True)
    started = time.perf_counter()

    options = option_names()  # every method and recipe `optim=` accepts
    notes = [f"`{name}` not run: {why}" for name, why in NEVER_RUN.items() if name in options]
    green_extra = [f"++callbacks.{name}=null" for name in NEVER_RUN if name in options]
    variants: list[tuple[str, list[str], bool]] = [("strict fp32", ["optim=[]"], True)]
    variants.append(("PyTorch defaults", ["optim=[]"], False))
    for name in ("amp", "prune", "green"):
        if name in options:
            variants.append((name, [f"+optim={name}", *(green_extra if name == "green" else [])], False))
        else:
            notes.append(f"`{name}` skipped: conf/optim/{name}.yaml is not in this checkout")
    # Pruning: its whole schedule before the steady epochs, and no export of the net at fit end.
    prune_sched = [
        "callbacks.prune.start_epoch=1",
        f"callbacks.prune.end_epoch={max(1, s['steady_from'] - 1)}",
        "callbacks.prune.export_dir=null",
    ]
    variants = [(n, o + (prune_sched if _composes(o, "prune") else []), st) for n, o, st in variants]
    if any(_composes(o, "prune") for _, o, _ in variants):
        notes.append(
            f"pruning scheduled at epochs 1..{max(1, s['steady_from'] - 1)} (steady epochs come after it), "
            "net export off"
        )
    common = [
        "logger=none",
        "++callbacks.progress_bar=null",
        "++callbacks.model_checkpoint=null",
        "++trainer.enable_progress_bar=false",
        "++trainer.enable_checkpointing=false",
        f"trainer={'cpu' if args.cpu_smoke else 'gpu'}",
        f"energy={'estimate' if args.cpu_smoke else 'auto'}",
    ]
    width = ["model.net.width=8"] if args.cpu_smoke else []
    bs = 32 if args.cpu_smoke else args.batch_size
    synthetic = [
        "data=synthetic",
        "model=resnet18",
        *width,
        f"data.num_samples={s['samples']}",
        f"data.batch_size={bs}",
        "data.eval_batch_size=1024",
        f"trainer.max_epochs={s['epochs']}",
        f"trainer.min_epochs={s['epochs']}",  # J/sample needs the steady epochs: early stopping waits
    ]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wattwise-gpu-bench-") as tmp:
        work = Path(tmp)
        # Untimed warm-up: CUDA context, cuDNN/cuBLAS handles, bf16 kernels.
        print("warm-up ...", flush=True)
        for _, opt, strict in variants[1:3]:
            fit_once(
                [
                    *synthetic,
                    *common,
                    *opt,
                    "trainer.max_epochs=1",
                    "trainer.min_epochs=1",
                    "++trainer.limit_train_batches=5",
                ],
                strict,
                device,
                work,
            )

        # 1. throughput and energy, interleaved rounds
        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
        for rnd in range(0 if args.overhead_only else s["rounds"]):
            order = variants if rnd % 2 == 0 else list(reversed(variants))
            for name, opt, strict in order:
                r = fit_once(
                    [*synthetic, *common, *opt, f"seed={rnd}"], strict, device, work, s["steady_from"]
                )
                r.pop("monitor", None)
                results[name].append(r)
                print(
                    f"  round {rnd + 1}/{s['rounds']} {name:<17} {r.get('precision'):<10} "
                    f"{_fmt(r.get('J_per_sample'), '{:.4f}')} J/sample  "
                    f"{_fmt(r.get('samples_per_s'), '{:.0f}')} samples/s  "
                    f"{_fmt(r.get('W'), '{:.0f}')} W  [{r['source']}]",
                    flush=True,
                )

        def paired(name: str, ref: str) -> float | None:
            ratios = [
                a["J_per_sample"] / b["J_per_sample"]
                for a, b in zip(results[name], results[ref])
                if a.get("J_per_sample") and b.get("J_per_sample")
            ]
            return _med(ratios)

        sources = sorted({r["source"] for rs in results.values() for r in rs})
        rows = [
            "| variant | precision | samples/s | W | mJ/sample (steady) | mJ/sample (whole fit) "
            "| vs strict fp32 | vs PyTorch defaults | synthetic acc % |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, _, _ in variants:
            rs = results[name]
            if not rs:
                continue
            sps = _med([r.get("samples_per_s") for r in rs])
            watts = _med([r.get("W") for r in rs])
            steady = _med([1e3 * r["J_per_sample"] for r in rs if r.get("J_per_sample")])
            whole = _med([1e3 * r["fit_J_per_sample"] for r in rs if r.get("fit_J_per_sample")])
            acc = _med([100 * r["test_acc"] for r in rs if r.get("test_acc") is not None])
            cells = [
                name,
                str(rs[0].get("precision")),
                _fmt(sps, "{:.0f}"),
                _fmt(watts, "{:.0f}"),
                _fmt(steady, "{:.2f}"),
                _fmt(whole, "{:.2f}"),
                _fmt(paired(name, "strict fp32"), "{:.3f}"),
                _fmt(paired(name, "PyTorch defaults"), "{:.3f}"),
                _fmt(acc, "{:.1f}"),
            ]
            rows.append("| " + " | ".join(cells) + " |")
        throughput = "\n".join(rows)
        print("\n" + throughput + "\n", flush=True)

        # 2. accuracy on a real task: digits, strict fp32 vs green (or the best option present)
        best = "green" if "green" in results else "amp" if "amp" in results else "PyTorch defaults"
        acc_variants = [v for v in variants if v[0] in ("strict fp32", best)]
        digits = [
            "data=digits",
            "model=resnet18",
            *width,
            "data.batch_size=64",
            f"trainer.max_epochs={s['acc_epochs']}",
        ]
        accs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in acc_variants}
        for seed in range(0 if args.overhead_only else s["acc_seeds"]):
            order = acc_variants if seed % 2 == 0 else list(reversed(acc_variants))
            for name, opt, strict in order:
                r = fit_once([*digits, *common, *opt, f"seed={seed}"], strict, device, work)
                r.pop("monitor", None)
                accs[name].append(r)
                print(f"  digits seed {seed} {name:<17} test acc {100 * r['test_acc']:.2f}%", flush=True)
        ref_acc = _med([100 * r["test_acc"] for r in accs["strict fp32"]]) if accs["strict fp32"] else None
        acc_rows = [
            "| variant | seeds | test acc % (median) | Δ vs strict fp32 (pt) | mJ/sample (whole fit) |"
        ]
        acc_rows.append("|---|---|---|---|---|")
        for name in accs:
            med = _med([100 * r["test_acc"] for r in accs[name]]) if accs[name] else None
            jps = _med([r["fit_J_per_sample"] * 1e3 for r in accs[name] if r.get("fit_J_per_sample")])
            delta = None if med is None or ref_acc is None else med - ref_acc
            cells = [
                name,
                str(len(accs[name])),
                _fmt(med, "{:.2f}"),
                _fmt(delta, "{:+.2f}"),
                _fmt(jps, "{:.2f}"),
            ]
            acc_rows.append("| " + " | ".join(cells) + " |")
        accuracy = "\n".join(acc_rows)
        print("\n" + accuracy + "\n", flush=True)

        # 3. monitor overhead: energy=auto vs energy=off, same fit, interleaved
        probe = next(v for v in variants if v[0] == ("amp" if "amp" in results else "PyTorch defaults"))
        ov_base = [x for x in synthetic if not x.startswith(("trainer.max_epochs", "trainer.min_epochs"))]
        ov_base += ["trainer.max_epochs=3"]
        ov_base += [c for c in common if not c.startswith("energy=")] + probe[1]
        fit_s: dict[str, list[float]] = {"auto": [], "off": []}
        epoch_s: dict[str, list[float]] = {"auto": [], "off": []}
        cost_s = rate = None
        for i in range(s["overhead_pairs"]):
            for energy in ("auto", "off") if i % 2 == 0 else ("off", "auto"):
                r = fit_once([*ov_base, f"energy={energy}"], probe[2], device, work)
                fit_s[energy].append(r["fit_s"])
                epoch_s[energy].append(r["epoch_s"])
                if energy == "auto" and cost_s is None and r.get("monitor") is not None:
                    cost_s, rate = window_cost_s(r["monitor"]), r.get("samples_per_s")
                print(
                    f"  overhead pair {i + 1} energy={energy:<4} fit {r['fit_s']:.2f} s, "
                    f"steady epoch {r['epoch_s']:.3f} s",
                    flush=True,
                )

        def paired_pct(d: dict[str, list[float]]) -> float:
            return 100 * _med([(a - b) / b for a, b in zip(d["auto"], d["off"])])

        cifar_epoch_s = 45000 / rate if rate else None  # a CIFAR-10 training epoch at this throughput
        model_pct = 100 * WINDOWS_PER_EPOCH * cost_s / cifar_epoch_s if cost_s and cifar_epoch_s else None
        over_rows = [
            f"- `{probe[0]}`, {len(fit_s['auto'])} interleaved pairs, energy=auto vs energy=off "
            f"(medians of paired differences; noise included):",
            f"  - steady epoch: {_med(epoch_s['auto']):.3f} s vs {_med(epoch_s['off']):.3f} s: "
            f"{paired_pct(epoch_s):+.2f}%",
            f"  - whole fit, including the meter's one-time set-up: {_med(fit_s['auto']):.2f} s vs "
            f"{_med(fit_s['off']):.2f} s: {paired_pct(fit_s):+.2f}%",
        ]
        if cost_s is not None:
            over_rows.append(
                f"- one meter window (close + reopen, device sync included) costs {1e3 * cost_s:.2f} ms; the "
                f"monitor closes {WINDOWS_PER_EPOCH} per epoch: "
                f"{WINDOWS_PER_EPOCH * 1e3 * cost_s:.1f} ms per epoch = "
                f"{100 * WINDOWS_PER_EPOCH * cost_s / _med(epoch_s['auto']):.2f}% of this benchmark's epoch"
                + (
                    f", {model_pct:.2f}% of a CIFAR-10 epoch (45,000 samples) at this speed"
                    if model_pct
                    else ""
                )
            )
        overhead = "\n".join(over_rows)
        print("\n" + overhead + "\n", flush=True)

    green_strict, green_default = paired(best, "strict fp32"), paired(best, "PyTorch defaults")
    acc_delta = None
    if best in accs and accs[best] and ref_acc is not None:
        acc_delta = _med([100 * r["test_acc"] for r in accs[best]]) - ref_acc
    goals = [
        f"- `{best}` energy/sample vs strict fp32: {_fmt(green_strict, '{:.3f}')} (goal <= 0.12)",
        f"- `{best}` energy/sample vs PyTorch defaults: {_fmt(green_default, '{:.3f}')} (goal <= 0.45)",
        f"- `{best}` accuracy on digits vs strict fp32: {_fmt(acc_delta, '{:+.2f}')} pt (goal within 0.5)",
        f"- monitor overhead on a CIFAR-10-sized epoch (window cost x {WINDOWS_PER_EPOCH} / epoch time): "
        f"{_fmt(model_pct, '{:.2f}')}%; measured on this benchmark's epochs: {paired_pct(epoch_s):+.2f}% "
        "(goal <= 1%)",
    ]
    text = "\n".join(
        [
            "## GPU benchmark (bench/gpu_bench.py)",
            "",
            f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; mode: {mode}",
            f"- card: {card}",
            f"- energy source: {', '.join(sources)}"
            + (" (an ESTIMATE: CPU smoke run)" if "estimate" in sources else " (measured)"),
            f"- workload: CIFAR-style ResNet-18, synthetic 32x32 data resident on the device, batch {bs}, "
            f"{s['samples']} samples (80% train), {s['epochs']} epochs per fit; steady = epochs "
            f"{s['steady_from']}.. (0-based; before them: warm-up and any pruning); "
            f"{s['rounds']} interleaved round(s); ratios are paired per round",
            *(f"- note: {n}" for n in notes),
            "",
            throughput,
            "",
            f"Accuracy on a real task (digits, ResNet-18, {s['acc_epochs']} epochs, "
            f"{s['acc_seeds']} seed(s)):",
            "",
            accuracy,
            "",
            "Energy monitor overhead:",
            "",
            overhead,
            "",
            "Goals:",
            "",
            *goals,
            "",
            f"(benchmark wall time {time.perf_counter() - started:.0f} s)",
            "",
        ]
    )
    out = args.out or OUT_DIR / f"gpu_bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return out


if __name__ == "__main__":
    main()
