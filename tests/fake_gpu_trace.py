"""Zeus's published power traces (tests/data/zeus_traces) replayed through a fake GPU.

`TraceGPU` is a `PowerGPU` whose step time and power at each limit come from one row set of a
trace: the card supports exactly the row set's range (lowest to highest limit measured). It does
not interpolate: a limit the trace did not measure raises, so a replay can only pass if the tuner
tried measured limits (the tests choose `pl_step_W` as the trace's own spacing and check that
the grid is exactly the measured limits). Optional seeded noise multiplies each step's time and
power by independent `1 + x` factors, x ~ N(0, noise) every step or, with `rho`, a slow AR(1)
drift of the same spread (a card warming up, boost clocks wandering: noise that more steps do not
average away).

`replay` drives the real `Power` hooks in Lightning's order with a stand-in trainer
(just the attributes the tuner reads) and the run's real Zeus monitor on the fake GPU, so one row
set takes milliseconds and hundreds of them fit in a test.
"""

from __future__ import annotations

import csv
import math
import random
import types
from collections import defaultdict
from functools import cache, reduce
from pathlib import Path

import torch
from fake_gpu_power import PowerGPU, install_power_gpu

from wattwise.energy.monitor import EnergyMonitor

TRACES = Path(__file__).parent / "data" / "zeus_traces"
CARDS = ("v100", "a40", "rtx6000", "p100")
VIRTUAL_STEPS_PER_EPOCH = 10  # a trace epoch replays as 10 long steps: the counter's mJ rounding is tiny

RowSet = dict[int, tuple[float, float]]  # limit W -> (time per epoch s, average power W)


@cache
def row_sets(card: str) -> dict[tuple[str, str, int, str], RowSet]:
    """Every row set of `card`'s trace, keyed by (dataset, network, batch size, optimizer)."""
    out: dict[tuple[str, str, int, str], RowSet] = defaultdict(dict)
    with (TRACES / f"summary_power_{card}.csv").open() as f:
        for r in csv.DictReader(f):
            key = (r["dataset"], r["network"], int(r["batch_size"]), r["optimizer"])
            out[key][int(r["power_limit"])] = (float(r["time_per_epoch"]), float(r["average_power"]))
    return dict(out)


def spacing_W(rows: RowSet) -> int:
    """The trace's own step between measured limits (above the lowest; the highest may be off-step)."""
    limits = sorted(rows)
    gaps = [b - limits[0] for b in limits[1:-1]] or [limits[-1] - limits[0]]
    return reduce(math.gcd, gaps) or 1


def trace_optimum(
    rows: RowSet, selector: str, eta: float = 0.5, factor: float = 1.1, among: list[int] | None = None
) -> int:
    """The measured limit (of `among`, default all) each selector's definition makes optimal (ties: higher).

    Written from the definitions (Zeus docs), not with Zeus's code: the expectation is independent.
    """
    limits = sorted(among or rows, reverse=True)
    t = {lim: rows[lim][0] for lim in limits}
    e = {lim: rows[lim][0] * rows[lim][1] for lim in limits}
    if selector == "energy":
        return min(limits, key=lambda lim: e[lim])
    if selector == "time":
        return min(limits, key=lambda lim: t[lim])
    if selector == "zeus_cost":
        return min(limits, key=lambda lim: eta * e[lim] + (1 - eta) * max(limits) * t[lim])
    if selector == "max_slowdown":
        return min(lim for lim in limits if t[lim] <= factor * t[max(limits)])
    raise ValueError(selector)


class TraceGPU(PowerGPU):
    """A fake card that runs one row set of a trace."""

    def __init__(
        self, rows: RowSet, noise: float = 0.0, rho: float = 0.0, seed: int = 0, limit_W: int | None = None
    ) -> None:
        low, high = min(rows), max(rows)
        super().__init__(limit_W=limit_W or high, min_limit_W=low, max_limit_W=high, name="Trace GPU")
        self.rows, self.noise, self.rho, self.rng = rows, noise, rho, random.Random(seed)
        self._drift = {"time": 0.0, "power": 0.0}

    def _jitter(self, kind: str) -> float:
        """1 + noise: N(0, noise) per step (rho=0), or an AR(1) drift with that spread and correlation rho."""
        if not self.noise:
            return 1.0
        x = self.rho * self._drift[kind] + math.sqrt(1 - self.rho**2) * self.rng.gauss(0.0, self.noise)
        self._drift[kind] = x
        return 1.0 + x

    def step_time_at(self, limit_W: int) -> float:
        seconds_per_step = self.rows[limit_W][0] / VIRTUAL_STEPS_PER_EPOCH  # KeyError: not measured
        return seconds_per_step * self._jitter("time")

    def power_at(self, limit_W: int) -> float:
        return self.rows[limit_W][1] * self._jitter("power")

    def energy_per_epoch(self, limit_W: int) -> float:
        return self.rows[limit_W][0] * self.rows[limit_W][1]


def stand_in_trainer(monitor: EnergyMonitor, batches: int, val_every: int | None) -> types.SimpleNamespace:
    """What the tuner reads from a Lightning trainer, for one process."""
    return types.SimpleNamespace(
        callbacks=[monitor],
        strategy=types.SimpleNamespace(root_device=torch.device("cpu")),
        world_size=1,
        precision="32-true",
        num_training_batches=batches,
        val_check_batch=val_every or batches,
        accumulate_grad_batches=1,
        is_global_zero=True,
        global_step=0,
        loggers=[],
    )


def replay(
    tuner,  # noqa: ANN001 - a Power
    gpu: TraceGPU,
    *,
    batches_per_epoch: int = 1000,
    val_every: int | None = None,
    max_batches: int = 400,
    after_choice: int = 3,
    world_size: int = 1,
) -> types.SimpleNamespace:
    """Run the tuner's hooks over up to `max_batches` training batches (a few once it chose); the trainer."""
    from wattwise.energy import meter

    with install_power_gpu(gpu):
        monitor = EnergyMonitor(mode="auto", gpu_index=0)
        monitor.meter = types.SimpleNamespace(zeus_monitor=meter._make_zeus_monitor(0))
        trainer = stand_in_trainer(monitor, batches_per_epoch, val_every)
        trainer.world_size = world_size
        module = torch.nn.Linear(4, 2)
        batch = torch.zeros(8, 4)
        trainer.callbacks.append(tuner)
        tuner.setup(trainer, module, "fit")  # as Lightning does: the tuner gets the run's energy monitor
        tuner.on_fit_start(trainer, module)
        left_after = None
        done = 0
        while done < max_batches and (left_after is None or left_after > 0):
            for batch_idx in range(batches_per_epoch):
                tuner.on_train_batch_start(trainer, module, batch, batch_idx)
                gpu.step()
                trainer.global_step += 1
                done += 1
                if tuner.status in ("tuned", "cached", "no_permission", "error"):
                    left_after = after_choice if left_after is None else left_after - 1
                if done >= max_batches or left_after == 0:
                    break
                if val_every and (batch_idx + 1) % val_every == 0:
                    tuner.on_validation_start(trainer, module)  # validation batches draw nothing here
            tuner.on_train_epoch_end(trainer, module)
        tuner.on_train_end(trainer, module)
        tuner.on_fit_end(trainer, module)
        tuner.teardown(trainer, module, "fit")
    return trainer


# ---- DDP --------------------------------------------------------------------------------------------
DDP_ROW_SETS = (  # two V100 jobs whose own energy optima differ (125 W and 150 W; together: 150 W)
    ("v100", ("cifar100", "shufflenetv2", 1024, "adam")),
    ("v100", ("imagenet", "resnet50", 256, "adadelta")),
)


def ddp_child(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One rank of the DDP test: its own fake card (row set `DDP_ROW_SETS[rank]`), gloo on the CPU."""
    import json

    import torch.distributed as dist
    from fake_gpu import tune_fake_cards_only

    tune_fake_cards_only(out_dir)
    from wattwise.methods.power.callback import Power

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        card, key = DDP_ROW_SETS[rank]
        rows = row_sets(card)[key]
        gpu = TraceGPU(rows, limit_W=200)
        tuner = Power(
            selector="energy", wait_steps=1, warmup_steps=1, profile_steps=4, blocks=2, pl_step_W=25
        )
        trainer = replay(tuner, gpu, world_size=world_size)
        result = {
            "status": tuner.status,
            "chosen_W": tuner.chosen_limit_W,
            "limit_history_mW": gpu.limit_history,
            "final_limit_mW": gpu.limit_mW,
            "profile": tuner.profile,
            "global_step": trainer.global_step,
        }
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
