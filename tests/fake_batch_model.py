"""A power/time model of training at each batch size, standing in for real steps in batch-size tests.

Per step at batch size b: time = a + c*b + q*b**2 seconds (a fixed per-step overhead, per-sample
work, and a slowdown at large b: caches and memory bandwidth), power = P0 + P1 * b / (b + k) W (the
device busier at larger b). Energy per step = power x time. Peak memory = m0 + m1*b bytes; sizes
>= `oom_from` run out of memory. `measure(b)` returns what `measure_steps` steps would read, and
counts its calls. The analytic optimum of each selector is computed in the tests from these
formulas, not with the finder's code.

`stand_in_trainer` is what the finder reads from a Lightning trainer (one process, on the CPU), and
`ddp_child` is one rank of the two-process (gloo) DDP test, with a model of its own per rank.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch

from wattwise.methods.batch_size.measure import CandidateMeasurement


@dataclass
class FakeModel:
    a: float = 0.02
    c: float = 1e-4
    q: float = 2e-8
    P0: float = 100.0
    P1: float = 200.0
    k: float = 128.0
    m0: int = 1_000_000
    m1: int = 10_000
    oom_from: int | None = None
    steps: int = 4
    calls: list[int] = field(default_factory=list)

    def step_time(self, b: int) -> float:
        return self.a + self.c * b + self.q * b * b

    def power(self, b: int) -> float:
        return self.P0 + self.P1 * b / (b + self.k)

    def J_per_sample(self, b: int) -> float:
        return self.power(b) * self.step_time(b) / b

    def s_per_sample(self, b: int) -> float:
        return self.step_time(b) / b

    def measure(self, b: int) -> CandidateMeasurement:
        self.calls.append(b)
        if self.oom_from is not None and b >= self.oom_from:
            return CandidateMeasurement(b, 0, 0, None, 0.0, None, oom=True)
        t = self.steps * self.step_time(b)
        return CandidateMeasurement(
            batch_size=b,
            steps=self.steps,
            samples=self.steps * b,
            energy_J=self.power(b) * t,
            time_s=t,
            peak_memory_bytes=self.m0 + self.m1 * b,
        )


class FakeDataModule:
    def __init__(self, n: int = 100_000, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self.dataset = torch.utils.data.TensorDataset(torch.zeros(n, 3), torch.zeros(n, dtype=torch.long))

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True)


def stand_in_trainer(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    datamodule: object,
    scheduler: object | None = None,
    world_size: int = 1,
    rank: int = 0,
) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        datamodule=datamodule,
        optimizers=[optimizer],
        lr_scheduler_configs=[types.SimpleNamespace(scheduler=scheduler)] if scheduler is not None else [],
        strategy=types.SimpleNamespace(root_device=torch.device("cpu")),
        world_size=world_size,
        is_global_zero=rank == 0,
        precision="32-true",
        callbacks=[],
    )


class TinyModule(torch.nn.Module):
    automatic_optimization = True

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 2)


# ---- DDP --------------------------------------------------------------------------------------------
DDP_MODELS = (  # rank 1's device is slower and hungrier: the pooled optimum differs from rank 0's own
    FakeModel(),
    FakeModel(a=0.005, c=4e-4, q=3e-7, P0=60.0, P1=300.0, k=32.0),
)
DDP_CANDIDATES = (16, 32, 64, 128, 256, 512, 1024)


def ddp_child(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One rank: its own fake model, the real finder, gloo on the CPU; writes what it applied."""
    import json
    from pathlib import Path

    import torch.distributed as dist

    from wattwise.methods.batch_size.callback import BatchSize

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model = DDP_MODELS[rank]
        module = TinyModule()
        opt = torch.optim.SGD(module.parameters(), lr=0.1)
        dm = FakeDataModule(batch_size=64)
        trainer = stand_in_trainer(module, opt, dm, world_size=world_size, rank=rank)
        finder = BatchSize(candidates=list(DDP_CANDIDATES), measure=model.measure)
        finder.on_fit_start(trainer, module)
        result = {
            "status": finder.status,
            "chosen": finder.chosen,
            "datamodule_batch_size": dm.batch_size,
            "lr": opt.param_groups[0]["lr"],
            "records": finder.records,
            "calls": model.calls,
        }
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
