"""A model of training whose cost per sample depends on the batch size AND the GPU's power limit.

For the joint search of batch size and power limit (`callbacks.batch_size.joint_power`). Per step at
batch size b under limit L: the work demands D(b) = P0 + P1*b/(b + k) W and takes t0(b) = a + c*b +
q*b**2 s unconstrained; under a limit below the demand it draws L and slows by (D/L)**alpha. So a
lower limit saves energy (energy per step ~ D**alpha * L**(1 - alpha)) and large batches, which
demand the most, lose the least to it: the batch size best at the card's maximum limit (32) is not
the batch size of the best (size, limit) pair (64 at 100 W).

`JointMeasure` stands in for the finder's real steps (`callbacks.batch_size.measure`, built by
Hydra): it reads the limit from the fake GPU Zeus sees (tests/fake_gpu_power.py), so it measures
whatever limit the finder set through the tuner, and records each (size, limit) and each settle
(the power tuner's warm-up after a limit change). The tests compute the optimum from `step`.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattwise.methods.batch_size.measure import CandidateMeasurement


@dataclass(frozen=True)
class JointModel:
    a: float = 0.01
    c: float = 2e-4
    q: float = 2e-6
    P0: float = 80.0
    P1: float = 250.0
    k: float = 48.0
    alpha: float = 0.5

    def demand_W(self, b: int) -> float:
        return self.P0 + self.P1 * b / (b + self.k)

    def step(self, b: int, limit_W: float) -> tuple[float, float]:
        """(seconds, watts) of one step at batch size b under limit_W."""
        t0, demand = self.a + self.c * b + self.q * b * b, self.demand_W(b)
        if limit_W >= demand:
            return t0, demand
        return t0 * (demand / limit_W) ** self.alpha, float(limit_W)

    def J_per_sample(self, b: int, limit_W: float) -> float:
        seconds, watts = self.step(b, limit_W)
        return seconds * watts / b

    def s_per_sample(self, b: int, limit_W: float) -> float:
        return self.step(b, limit_W)[0] / b


MODEL = JointModel()
BUILT: list[JointMeasure] = []  # every JointMeasure Hydra built, newest last


def _limit_now_W() -> int:
    import zeus.device.gpu as zgpu

    return int(zgpu._gpus.gpus[0].limit_mW // 1000)


class JointMeasure:
    """The finder's `Measure` on `MODEL` at the fake GPU's current limit; records what it measured."""

    def __init__(self, steps: int = 4, oom_from: int | None = None, model: JointModel = MODEL) -> None:
        self.steps = steps
        self.model = model
        self.oom_from = oom_from  # sizes from here on run out of memory
        self.calls: list[tuple[int, int]] = []  # (batch size, limit W) per measurement
        self.settles: list[tuple[int, int, int]] = []  # (batch size, steps, limit W) per settle
        BUILT.append(self)

    def settle(self, batch_size: int, steps: int) -> None:
        self.settles.append((batch_size, steps, _limit_now_W()))

    def __call__(self, b: int) -> CandidateMeasurement:
        limit = _limit_now_W()
        self.calls.append((b, limit))
        if self.oom_from is not None and b >= self.oom_from:
            return CandidateMeasurement(b, 0, 0, None, 0.0, None, oom=True)
        seconds, watts = self.model.step(b, limit)
        t = self.steps * seconds
        return CandidateMeasurement(
            batch_size=b,
            steps=self.steps,
            samples=self.steps * b,
            energy_J=watts * t,
            time_s=t,
            peak_memory_bytes=None,
        )


# ---- DDP --------------------------------------------------------------------------------------------
DDP_MODELS = (MODEL, JointModel(a=0.005, c=4e-4, q=3e-6, P0=60.0, P1=300.0, k=32.0, alpha=0.8))
DDP_SIZES = (16, 32, 64, 128)


def ddp_child(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One rank: its own fake card and model, the real finder and tuner hooks, gloo on the CPU."""
    import json
    import types
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from fake_batch_model import FakeDataModule, TinyModule
    from fake_gpu import tune_fake_cards_only
    from fake_gpu_power import PowerGPU, install_power_gpu

    tune_fake_cards_only(out_dir)
    from wattwise.energy import meter
    from wattwise.energy.monitor import EnergyMonitor
    from wattwise.methods import services
    from wattwise.methods.batch_size.callback import BatchSize
    from wattwise.methods.power.callback import Power

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        gpu = PowerGPU(limit_W=275)
        with install_power_gpu(gpu):
            monitor = EnergyMonitor(mode="auto", gpu_index=0)
            monitor.meter = meter.EnergyMeter(mode="auto", gpu_index=0)  # Zeus's monitor on the fake card
            module = TinyModule()
            opt = torch.optim.SGD(module.parameters(), lr=0.1)
            dm = FakeDataModule(batch_size=16)
            tuner = Power(selector="time", pl_step_W=50, warmup_steps=1, profile_steps=2)
            measure = JointMeasure(model=DDP_MODELS[rank])
            finder = BatchSize(candidates=list(DDP_SIZES), measure=measure, joint_power=True)
            trainer = types.SimpleNamespace(
                callbacks=[monitor, finder, tuner],
                datamodule=dm,
                optimizers=[opt],
                lr_scheduler_configs=[],
                strategy=types.SimpleNamespace(root_device=torch.device("cpu")),
                world_size=world_size,
                is_global_zero=rank == 0,
                precision="32-true",
                num_training_batches=10,
                val_check_batch=10,
                accumulate_grad_batches=1,
                global_step=0,
                loggers=[],
            )
            services.bind(trainer.callbacks)  # as assemble() does: the finder gets the tuner's limits
            finder.on_fit_start(trainer, module)
            tuner.on_fit_start(trainer, module)
            for i in range(3):
                tuner.on_train_batch_start(trainer, module, torch.zeros(dm.batch_size, 3), i)
                gpu.step()
                trainer.global_step += 1
            trained_at = list(gpu.step_limits_W)
            tuner.on_train_end(trainer, module)
            tuner.on_fit_end(trainer, module)
            tuner.teardown(trainer, module, "fit")
        result = {
            "chosen": finder.chosen,
            "limit_W": finder.limit_W,
            "datamodule_batch_size": dm.batch_size,
            "calls": measure.calls,
            "tuner_status": tuner.status,
            "tuner_source": tuner.source,
            "trained_at_W": trained_at,
            "limit_history_mW": gpu.limit_history,
            "final_limit_mW": gpu.limit_mW,
        }
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
