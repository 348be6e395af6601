"""Measuring batch sizes: real training steps on the real net, read by the run's energy meter.

The finder only needs a `Measure`: a callable from a batch size to a `CandidateMeasurement` (plain
data), so tests can pass a power/time model instead of running steps. `StepMeasurer` is the real
one: it builds batches of the size from the datamodule's own train loader, moves them with the
strategy, runs `warmup_steps` then `measure_steps` full training steps (the module's
`training_step` through the strategy, so DDP's gradient sync and the precision's autocast apply;
backward; optimizer step) and reads the measured steps with `meter.begin/end`.

Measuring trains the net, so `snapshot` / `restore` put back everything it touches: weights and
buffers, optimizer and LR-scheduler state, the torch/CUDA/Python/NumPy RNG states, train/eval
modes and the metrics a training step updates. Training then starts as it would have.

Under DDP every rank measures the same candidates on its own device; `search` stops for every
rank at the first size any rank ran out of memory at, and `pool` makes the job's figures: energy
summed over ranks, time the slowest rank's, out-of-memory if any rank was, the highest peak memory.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from wattwise.compat.torchmetrics import update_count
from wattwise.energy.monitor import batch_size_of

KEY_PREFIX = "wattwise.batch_size"  # meter windows: wattwise.batch_size.<size>, apart from the monitor's


@dataclass(frozen=True)
class CandidateMeasurement:
    """What `steps` measured training steps at `batch_size` cost (`samples`: the samples they held)."""

    batch_size: int
    steps: int
    samples: int
    energy_J: float | None
    time_s: float
    peak_memory_bytes: int | None  # None: not measured (CPU)
    oom: bool = False
    limit_W: int | None = None  # the GPU power limit it ran at (the joint search); None: not set

    def as_record(self) -> dict[str, Any]:
        """JSON-safe, with the per-sample figures the choice is made on."""
        per_J = self.energy_J / self.samples if self.energy_J is not None and self.samples else None
        per_s = self.time_s / self.samples if self.samples else None
        return {
            "batch_size": self.batch_size,
            "steps": self.steps,
            "samples": self.samples,
            "energy_J": self.energy_J,
            "time_s": self.time_s,
            "J_per_sample": per_J,
            "s_per_sample": per_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "oom": self.oom,
            "limit_W": self.limit_W,
        }

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> CandidateMeasurement:
        return cls(
            batch_size=int(r["batch_size"]),
            steps=int(r["steps"]),
            samples=int(r["samples"]),
            energy_J=None if r["energy_J"] is None else float(r["energy_J"]),
            time_s=float(r["time_s"]),
            peak_memory_bytes=None if r["peak_memory_bytes"] is None else int(r["peak_memory_bytes"]),
            oom=bool(r["oom"]),
            limit_W=None if r.get("limit_W") is None else int(r["limit_W"]),
        )


Measure = Callable[[int], CandidateMeasurement]


def out_of_memory(batch_size: int, limit_W: int | None = None) -> CandidateMeasurement:
    return CandidateMeasurement(batch_size, 0, 0, None, 0.0, None, oom=True, limit_W=limit_W)


# ---- DDP ------------------------------------------------------------------------------------------
def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True if `flag` is true on any rank (itself without a process group)."""
    if not _group_ready():
        return flag
    import torch.distributed as dist

    t = torch.tensor([float(flag)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def pool(
    ms: Sequence[CandidateMeasurement], device: torch.device | None = None
) -> list[CandidateMeasurement]:
    """The job's measurements: energy summed, time and peak memory the largest, OOM if any rank's."""
    if not ms or not _group_ready():
        return list(ms)
    import torch.distributed as dist

    energy = torch.tensor([m.energy_J or 0.0 for m in ms], dtype=torch.float64, device=device)
    has_energy = torch.tensor([float(m.energy_J is not None) for m in ms], dtype=torch.float64, device=device)
    worst = torch.tensor(
        [[m.time_s, float(m.oom), float(m.peak_memory_bytes or -1)] for m in ms],
        dtype=torch.float64,
        device=device,
    )
    dist.all_reduce(energy, op=dist.ReduceOp.SUM)
    dist.all_reduce(has_energy, op=dist.ReduceOp.MIN)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    samples = torch.tensor([m.samples for m in ms], dtype=torch.float64, device=device)
    dist.all_reduce(samples, op=dist.ReduceOp.SUM)
    out = []
    for i, m in enumerate(ms):
        t, oom, peak = worst[i].tolist()
        out.append(
            replace(
                m,
                energy_J=float(energy[i]) if has_energy[i] > 0 else None,
                time_s=t,
                samples=int(samples[i]),
                oom=bool(oom),
                peak_memory_bytes=int(peak) if peak >= 0 else None,
            )
        )
    return out


def search(
    sizes: Sequence[int], measure: Measure, device: torch.device | None = None
) -> list[CandidateMeasurement]:
    """Measure each size, ascending; at the first size any rank ran out of memory, the rest are too."""
    out: list[CandidateMeasurement] = []
    ordered = sorted(sizes)
    for i, b in enumerate(ordered):
        m = measure(b)
        if any_rank(m.oom, device):
            out += [out_of_memory(b)] + [out_of_memory(larger) for larger in ordered[i + 1 :]]
            break
        out.append(m)
    return out


def search_joint(
    sizes: Sequence[int],
    limits_W: Sequence[int],
    set_limit: Callable[[int], None],
    settle_steps: int,
    measure: Measure,
    device: torch.device | None = None,
) -> list[CandidateMeasurement]:
    """Every size at every limit (limits in the order given, sizes ascending), each tagged with its limit.

    After each limit change `settle_steps` unmeasured steps run first (the power tuner's warm-up), by
    the measure's `settle(batch_size, steps)` where it has one. Sizes out of memory at the first limit
    are not tried at the others (memory does not depend on the limit).
    """
    out: list[CandidateMeasurement] = []
    tried = sorted(sizes)
    for limit in limits_W:
        set_limit(limit)
        settle = getattr(measure, "settle", None)
        if settle is not None and settle_steps > 0 and tried:
            settle(tried[0], settle_steps)
        found = search(tried, measure, device)
        out += [replace(m, limit_W=limit) for m in found]
        out += [out_of_memory(b, limit) for b in sorted(sizes) if b not in tried]
        tried = [m.batch_size for m in found if not m.oom]
    return out


# ---- snapshot and restore -------------------------------------------------------------------------
@dataclass
class TrainingState:
    """Everything a measuring step changes, copied before the first one."""

    module: dict[str, torch.Tensor]
    optimizers: list[dict[str, Any]]
    schedulers: list[dict[str, Any]]
    rng: dict[str, Any]
    training_modes: dict[str, bool]
    metric_updates: dict[str, int]


def _metrics(module: torch.nn.Module) -> dict[str, Any]:
    try:
        from torchmetrics import Metric
    except ImportError:  # pragma: no cover - Lightning depends on torchmetrics
        return {}
    return {name: m for name, m in module.named_modules() if isinstance(m, Metric)}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    with contextlib.suppress(ImportError):
        import numpy as np

        state["numpy"] = np.random.get_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


def snapshot(trainer: Any, module: torch.nn.Module) -> TrainingState:
    """Copies of what measuring changes (weights on the CPU: the copy must not count as GPU memory)."""
    return TrainingState(
        module={k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()},
        optimizers=[copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers],
        schedulers=[copy.deepcopy(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs],
        rng=_rng_state(),
        training_modes={name: m.training for name, m in module.named_modules()},
        metric_updates={name: update_count(m) for name, m in _metrics(module).items()},
    )


def restore(state: TrainingState, trainer: Any, module: torch.nn.Module) -> None:
    """Put back what `snapshot` copied: training starts as it would have without measuring."""
    module.load_state_dict(state.module)
    for opt, saved in zip(trainer.optimizers, state.optimizers, strict=True):
        opt.load_state_dict(saved)
        opt.zero_grad(set_to_none=True)
    for config, saved in zip(trainer.lr_scheduler_configs, state.schedulers, strict=True):
        config.scheduler.load_state_dict(saved)
    _set_rng_state(state.rng)
    for name, m in module.named_modules():
        if name in state.training_modes:
            m.training = state.training_modes[name]
    for name, metric in _metrics(module).items():
        if update_count(metric) != state.metric_updates.get(name, 0):
            metric.reset()


@contextlib.contextmanager
def quiet_logging(module: Any) -> Iterator[None]:
    """`self.log` / `self.log_dict` as no-ops: outside the fit loop Lightning's would raise."""

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    module.log, module.log_dict = nothing, nothing
    try:
        yield
    finally:
        del module.log, module.log_dict


# ---- the real measurement -------------------------------------------------------------------------
def _batches(loader: Any) -> Iterator[Any]:
    """The loader's batches, starting over when it runs out (a short train set)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the train loader yields no batches")


class StepMeasurer:
    """The default `Measure`: real training steps at each batch size (see the module doc)."""

    def __init__(self, trainer: Any, module: Any, meter: Any, warmup_steps: int, measure_steps: int) -> None:
        self.trainer, self.module, self.meter = trainer, module, meter
        self.warmup_steps, self.measure_steps = warmup_steps, measure_steps
        self.device: torch.device = trainer.strategy.root_device
        self.calls = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _step(self, batch: Any, index: int) -> int:
        trainer = self.trainer
        batch = trainer.strategy.batch_to_device(batch)
        out = trainer.strategy.training_step(batch, index)
        loss = out["loss"] if isinstance(out, Mapping) else out
        if not isinstance(loss, torch.Tensor):
            raise ValueError("training_step returned no loss to measure a step with")
        loss.backward()
        for opt in trainer.optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return batch_size_of(batch)

    def settle(self, batch_size: int, steps: int) -> None:
        """`steps` unmeasured training steps at `batch_size` (after a power-limit change)."""
        datamodule = self.trainer.datamodule
        datamodule.batch_size = batch_size
        batches = _batches(datamodule.train_dataloader())
        try:
            with quiet_logging(self.module):
                self.module.train()
                for i in range(steps):
                    self._step(next(batches), i)
                self._sync()
        finally:
            batches = None

    def __call__(self, batch_size: int) -> CandidateMeasurement:
        self.calls += 1
        datamodule = self.trainer.datamodule
        datamodule.batch_size = batch_size
        key = f"{KEY_PREFIX}.{batch_size}"
        on_cuda = self.device.type == "cuda"
        batches = _batches(datamodule.train_dataloader())
        samples = 0
        try:
            with quiet_logging(self.module):
                self.module.train()
                if on_cuda:
                    torch.cuda.reset_peak_memory_stats(self.device)
                for i in range(self.warmup_steps):
                    self._step(next(batches), i)
                self._sync()
                self.meter.begin(key)
                for i in range(self.measure_steps):
                    samples += self._step(next(batches), self.warmup_steps + i)
                self._sync()
                reading = self.meter.end(key)
        except torch.cuda.OutOfMemoryError:
            if self.meter.is_open(key):
                self.meter.end(key)
            for opt in self.trainer.optimizers:
                opt.zero_grad(set_to_none=True)
            del batches
            gc.collect()
            torch.cuda.empty_cache()
            return out_of_memory(batch_size)
        finally:
            batches = None  # a loader's workers end with its iterator
        peak = int(torch.cuda.max_memory_allocated(self.device)) if on_cuda else None
        return CandidateMeasurement(
            batch_size=batch_size,
            steps=self.measure_steps,
            samples=samples,
            energy_J=reading.total_J,
            time_s=reading.time_s,
            peak_memory_bytes=peak,
        )
