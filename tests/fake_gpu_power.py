"""A fake GPU whose step time and power draw depend on its power limit, for power-limit tuning tests.

`PowerGPU` extends tests/fake_gpu.py's `FakeGPU` (a subclass of Zeus's own `GPU`) with a
simple physical model: at limit L a training step takes `step_time_s(L)` and draws
`power_W(L)`. Time is *virtual*: `install_power_gpu` points Zeus's clock
(`zeus.monitor.energy.time`) at a `VirtualClock`, and the `StepModel` callback advances that
clock and the energy counter by one modelled step per training batch. Zeus's real monitor
then measures exactly the model, with no sleeps and no timing noise, so each selector's choice
can be predicted from the model (`expected_limit`).

The GPU also plays the parts the tests need: no permission (`permitted=False`, raising
Zeus's `ZeusGPUNoPermissionError` like NVML does; `set_limit_as_root` is what a root daemon can
still do), and a history file of every change, so a subprocess killed by SIGTERM can be checked
afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from fake_gpu import FakeGPU, install_fake_gpus
from zeus.device.gpu import ZeusGPUNoPermissionError

# The model: step time (relative) at each limit, interpolated linearly in between; power draw is
# the limit, capped by what the work demands. Chosen so that the selectors disagree:
# time -> 300 W, max_slowdown(1.05) -> 250 W, zeus_cost(0.5) -> 200 W, energy -> 150 W.
STEP_TIME_REL = {100: 2.2, 150: 1.25, 200: 1.10, 250: 1.03, 300: 1.00}
STEP_TIME_S = 0.1  # virtual seconds per step at the highest limit
DEMAND_W = 270.0  # what the work would draw unconstrained


def step_time_s(limit_W: float) -> float:
    points = sorted(STEP_TIME_REL.items())
    if limit_W <= points[0][0]:
        return STEP_TIME_S * points[0][1]
    for (l0, t0), (l1, t1) in zip(points, points[1:], strict=False):
        if limit_W <= l1:
            return STEP_TIME_S * (t0 + (t1 - t0) * (limit_W - l0) / (l1 - l0))
    return STEP_TIME_S * points[-1][1]


def power_W(limit_W: float) -> float:
    return min(limit_W, DEMAND_W)


def expected_limit(
    selector: str, limits_W: Sequence[int], eta: float = 0.5, factor: float = 1.1, world_size: int = 1
) -> int:
    """The limit the model makes optimal, by each selector's definition (ties: the higher limit)."""
    limits = sorted(limits_W, reverse=True)
    t = {lim: step_time_s(lim) for lim in limits}
    e = {lim: step_time_s(lim) * power_W(lim) for lim in limits}
    if selector == "time":
        return min(limits, key=lambda lim: t[lim])
    if selector == "energy":
        return min(limits, key=lambda lim: e[lim])
    if selector == "zeus_cost":
        max_power = max(limits) * world_size
        return min(limits, key=lambda lim: eta * e[lim] + (1 - eta) * max_power * t[lim])
    if selector == "max_slowdown":
        return min(lim for lim in limits if t[lim] <= factor * t[max(limits)])
    raise ValueError(selector)


class VirtualClock:
    """Stands in for `time.time` inside Zeus's monitor; moves only when a step is modelled."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class PowerGPU(FakeGPU):
    """A FakeGPU with the model above, a permission switch and an optional history file."""

    def __init__(
        self,
        limit_W: int = 275,
        min_limit_W: int = 100,
        max_limit_W: int = 300,
        permitted: bool = True,
        persistence: bool = False,
        history_path: str | Path | None = None,
        name: str = "Fake A100",
    ) -> None:
        super().__init__(name=name, min_limit_W=min_limit_W, max_limit_W=max_limit_W, limit_W=limit_W)
        self.permitted = permitted
        self.persistence = persistence
        self.clock = VirtualClock()
        self.history_path = Path(history_path) if history_path else None
        self.persistence_history: list[bool] = []
        self.step_limits_W: list[int] = []  # the limit each modelled step ran at
        self.reads_after_choice: list[int] = []  # energy reads so far, at each step after a choice

    @property
    def limit_W(self) -> int:
        return self.limit_mW // 1000

    def _record(self, line: str) -> None:
        if self.history_path is not None:
            with self.history_path.open("a") as f:
                f.write(line + "\n")
                f.flush()

    def set_power_management_limit(self, power_limit_mw: int, block: bool = True) -> None:
        if int(power_limit_mw) == self.limit_mW:
            return  # NVML is not called for no change (as Zeus's NVIDIAGPU does)
        if not self.permitted:
            raise ZeusGPUNoPermissionError("Insufficient Permissions (fake GPU)")
        self.set_limit_as_root(power_limit_mw)

    def set_persistence_mode(self, enabled: bool, block: bool = True) -> None:
        if bool(enabled) == self.persistence:
            return
        if not self.permitted:
            raise ZeusGPUNoPermissionError("Insufficient Permissions (fake GPU)")
        self.set_persistence_as_root(enabled)

    # what a privileged process (zeusd, in tests/fake_zeusd.py) can do whatever `permitted` says
    def set_limit_as_root(self, power_limit_mw: int) -> None:
        if int(power_limit_mw) == self.limit_mW:
            return
        super().set_power_management_limit(power_limit_mw)
        self._record(f"limit {self.limit_mW}")

    def set_persistence_as_root(self, enabled: bool) -> None:
        if bool(enabled) == self.persistence:
            return
        self.persistence = bool(enabled)
        self.persistence_history.append(self.persistence)
        self._record(f"persistence {int(self.persistence)}")

    # the model; tests/fake_gpu_trace.py replaces it with a published trace
    def step_time_at(self, limit_W: int) -> float:
        return step_time_s(limit_W)

    def power_at(self, limit_W: int) -> float:
        return power_W(limit_W)

    def step(self) -> None:
        """One modelled training step at the current limit."""
        seconds = self.step_time_at(self.limit_W)
        self.clock.advance(seconds)
        self.advance(seconds * self.power_at(self.limit_W))
        self.step_limits_W.append(self.limit_W)


@contextmanager
def install_power_gpu(gpu: PowerGPU) -> Iterator[PowerGPU]:
    """Make Zeus see `gpu` (index 0) and read time from its virtual clock inside the block."""
    import zeus.monitor.energy as zenergy

    saved_time = zenergy.time
    with install_fake_gpus([gpu]):
        zenergy.time = gpu.clock
        try:
            yield gpu
        finally:
            zenergy.time = saved_time


def _gpu() -> PowerGPU:
    import zeus.device.gpu as zgpu

    return zgpu._gpus.gpus[0]


class StepModel(L.Callback):
    """Runs the model's step on the fake GPU after each real training batch (time and energy).

    Once the tuner has chosen, it also notes how many energy reads the GPU has seen, so a test
    can check that steps after the choice read nothing.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        gpu = _gpu()
        gpu.step()
        tuner = next((cb for cb in trainer.callbacks if type(cb).__name__ == "Power"), None)
        if tuner is not None and tuner.status in ("tuned", "cached"):
            gpu.reads_after_choice.append(len(gpu.energy_reads))


class RaiseAt(L.Callback):
    """Raises `exc` (a builtin exception name) at the end of training batch `step` (global)."""

    def __init__(self, step: int, exc: str = "RuntimeError") -> None:
        self.step, self.exc = step, exc

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step >= self.step:
            import builtins

            raise getattr(builtins, self.exc)(f"raised by the test at step {trainer.global_step}")


class ReshapeNetAt(L.Callback):
    """Stands in for a prune: gives the net a new (unused) parameter at the end of epoch `epoch`
    and, as a prune does, tells the other methods (`announce_structure_change`) unless `announce`
    is false."""

    def __init__(self, epoch: int = 0, announce: bool = True) -> None:
        self.epoch, self.announce = epoch, announce

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        import torch

        from wattwise.methods.base import StructureChange, announce_structure_change

        if trainer.current_epoch == self.epoch:
            pl_module.net.register_parameter("pruned_marker", torch.nn.Parameter(torch.zeros(3)))
            if self.announce:
                change = StructureChange(source="prune", epoch=trainer.current_epoch)
                announce_structure_change(trainer, pl_module, change)


class WaitForSignalBelow(L.Callback):
    """For the SIGTERM test: once the fake GPU runs below `below_W`, write `marker` and wait for a signal."""

    def __init__(self, marker: str, signalled: str, below_W: int, timeout_s: float = 120.0) -> None:
        self.marker, self.signalled = Path(marker), Path(signalled)
        self.below_W, self.timeout_s = below_W, timeout_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self.marker.exists() or _gpu().limit_W >= self.below_W:
            return
        self.marker.write_text(str(_gpu().limit_mW))
        deadline = time.monotonic() + self.timeout_s
        while not self.signalled.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def sigterm_child(workdir: str) -> None:
    """Entry point of the training subprocess that the SIGTERM test terminates.

    A SIGTERM handler is installed before training (the one the tuner must chain); it writes
    the GPU's limit as it sees it when called, i.e. after the tuner's handler ran.
    """
    import signal

    from conftest import compose_cfg

    from wattwise.train import train

    work = Path(workdir)
    gpu = PowerGPU(limit_W=275, history_path=work / "history.txt")
    signalled = work / "chained.txt"

    def earlier_handler(signum, frame) -> None:  # noqa: ANN001
        signalled.write_text(str(gpu.limit_mW))

    signal.signal(signal.SIGTERM, earlier_handler)
    cfg = compose_cfg(
        work,
        [
            "+optim=power",
            "energy.gpu_index=0",
            "callbacks.power.pl_step_W=50",
            "callbacks.power.warmup_steps=1",
            "callbacks.power.profile_steps=2",
            "trainer.limit_train_batches=30",
            "data.batch_size=16",
            "+callbacks.gpu_model._target_=fake_gpu_power.StepModel",
            "+callbacks.wait._target_=fake_gpu_power.WaitForSignalBelow",
            f"+callbacks.wait.marker={work / 'waiting.txt'}",
            f"+callbacks.wait.signalled={signalled}",
            "+callbacks.wait.below_W=250",
        ],
    )
    with install_power_gpu(gpu):
        train(cfg)
