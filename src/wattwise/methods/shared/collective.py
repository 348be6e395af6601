"""One decision for every rank of a DDP run: pool the ranks' measurements, let rank 0 decide, broadcast.

Every rank measures its own card over the same batches (the schedule only counts batches), so the
ranks hold samples in the same order; as in Zeus's own optimizer, a sample's energy is summed over
the ranks (the job's energy) and its time is the slowest rank's. Without an initialised process
group these are identity operations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

T = TypeVar("T")
S = TypeVar("S")  # a dataclass with `energy_J` and `time_s` (the power profiler's Sample)


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def collective_device() -> Any:
    """Where a collective's tensors must live: NCCL reduces CUDA tensors only (this process's
    current card, as torch's own object collectives use), gloo and the others CPU tensors."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def pool_samples(samples: Sequence[S]) -> list[S]:
    """The job's samples: energy summed over ranks, time the slowest rank's."""
    if not samples or not _group_ready():
        return list(samples)
    import torch
    import torch.distributed as dist

    device = collective_device()
    energy = torch.tensor([s.energy_J for s in samples], dtype=torch.float64, device=device)
    time = torch.tensor([s.time_s for s in samples], dtype=torch.float64, device=device)
    dist.all_reduce(energy, op=dist.ReduceOp.SUM)
    dist.all_reduce(time, op=dist.ReduceOp.MAX)
    return [
        replace(s, energy_J=float(e), time_s=float(t))
        for s, e, t in zip(samples, energy.tolist(), time.tolist(), strict=True)
    ]


def decide_on_rank_zero(make: Callable[[], T]) -> T:
    """`make()` on rank 0 only; every rank gets its result."""
    if not _group_ready():
        return make()
    import torch.distributed as dist

    box: list[Any] = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
