"""The energy meter and monitor, against the real Zeus code with a fake GPU, and the estimate."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from fake_gpu import FakeGPU, install_fake_gpus

from wattwise.energy import EnergyMeter, EnergyMonitor, EstimateModel
from wattwise.energy import meter as meter_module
from wattwise.train import train


def _burn_cpu(seconds: float = 0.2) -> None:
    import time

    end = time.perf_counter() + seconds
    a = torch.randn(128, 128)
    while time.perf_counter() < end:
        a = (a @ a).tanh()


def test_estimate_is_labelled_and_follows_cpu_time():
    meter = EnergyMeter("estimate", estimate=EstimateModel(cpu_W_per_core=10.0))
    assert meter.source == "estimate" and not meter.measured
    assert "estimate" in meter.describe()
    meter.begin("w")
    _burn_cpu()
    r = meter.end("w")
    assert r.gpu_J is None
    assert r.cpu_J is not None and r.cpu_J > 0
    # 10 W per busy core: the estimate cannot exceed 10 W x cores x wall time
    assert r.cpu_J <= 10.0 * torch.get_num_threads() * r.time_s * 1.5 + 0.5


def test_off_measures_time_only():
    meter = EnergyMeter("off")
    meter.begin("w")
    r = meter.end("w")
    assert meter.source == "off" and r.total_J is None and r.time_s >= 0


def test_bad_mode_and_negative_estimate_are_rejected():
    with pytest.raises(ValueError, match="energy.mode"):
        EnergyMeter("sometimes")
    with pytest.raises(ValueError, match="cpu_W_per_core"):
        EstimateModel(cpu_W_per_core=-1)
    with pytest.raises(ValueError, match="grid_gCO2_per_kWh"):
        EnergyMonitor(grid_gCO2_per_kWh=-5)


def test_auto_without_counters_falls_back_to_a_labelled_estimate():
    meter = EnergyMeter("auto")  # no GPU, and RAPL hidden from Zeus (conftest's no_rapl)
    assert meter.source == "estimate" and not meter.measured


def test_a_cpu_run_where_zeus_could_find_no_counter_does_not_build_a_zeus_monitor(monkeypatch, tmp_path):
    """No GPU and no RAPL directory: Zeus (about a second of imports) would find nothing to read."""
    monkeypatch.setattr(meter_module, "RAPL_DIRS", (str(tmp_path / "no-rapl"),))
    assert meter_module._make_zeus_monitor(None) is None
    meter = EnergyMeter("auto")
    assert meter.zeus_monitor is None and meter.source == "estimate" and not meter.measured
    meter.begin("w")
    assert meter.end("w").cpu_J is not None  # the estimate, as before


class _FakeRAPLMonitor:
    """A Zeus monitor on a CPU whose RAPL counters are readable: 5 J package + 1 J DRAM a window."""

    gpu_indices: list[int] = []
    cpu_indices = [0]
    gpus = None

    def begin_window(self, key):
        pass

    def end_window(self, key):
        return SimpleNamespace(time=2.0, gpu_energy={}, cpu_energy={0: 5.0}, dram_energy={0: 1.0})


def test_auto_with_readable_rapl_measures_the_cpu(monkeypatch):
    monkeypatch.setattr(meter_module, "_make_zeus_monitor", lambda gpu_index: _FakeRAPLMonitor())
    meter = EnergyMeter("auto")
    assert meter.source == "zeus-rapl" and meter.measured
    meter.begin("w")
    r = meter.end("w")
    assert r.cpu_J == pytest.approx(6.0) and r.gpu_J is None and r.total_J == pytest.approx(6.0)


def test_meter_reads_the_fake_gpu_counter_through_zeus():
    gpu = FakeGPU()
    with install_fake_gpus([gpu]):
        meter = EnergyMeter("auto", gpu_index=0)
        assert meter.source == "zeus-nvml" and meter.measured
        meter.begin("w")
        gpu.advance(12.5)
        r = meter.end("w")
    assert r.gpu_J == pytest.approx(12.5)
    assert gpu.energy_reads[-1] - gpu.energy_reads[-2] == pytest.approx(12.5)


def _fake_gpu_run(make_cfg, *extra):
    cfg = make_cfg(
        "trainer.max_epochs=2", "energy.gpu_index=0", "+callbacks.burn._target_=fake_gpu.BurnCallback", *extra
    )
    gpu = FakeGPU()
    with install_fake_gpus([gpu]):
        train(cfg)
    return (
        cfg,
        gpu,
        json.loads((__import__("pathlib").Path(cfg.paths.output_dir) / "summary.json").read_text()),
    )


def test_monitor_totals_equal_what_the_fake_gpu_reports(make_cfg):
    cfg, gpu, s = _fake_gpu_run(make_cfg)
    # sanity check: 2 val batches x 0.5 J; each epoch: 3 train x 1 J + 2 val x 0.5 J; test: 2 x 0.25 J
    assert s["energy/source"] == "zeus-nvml"
    assert s["energy/total_J"] == pytest.approx(1.0 + 2 * 4.0)
    assert s["energy/gpu_J"] == pytest.approx(s["energy/total_J"])
    assert s["energy/epoch_J"] == pytest.approx(4.0)
    assert s["energy/test_J"] == pytest.approx(0.5)
    assert s["energy/J_per_sample"] == pytest.approx(9.0 / (2 * 3 * 64))
    assert s["energy/avg_W"] == pytest.approx(9.0 / s["time/train_s"])
    assert s["carbon/gCO2e"] == pytest.approx(9.0 / 3.6e6 * 475.0)
    # the counter is read only at boundaries, never per step: fit start (1), the first epoch's
    # start (2), each epoch's end (2 + 2; the checkpoint saved right after costs none), fit end (1),
    # the test window (2)
    assert len(gpu.energy_reads) == 1 + 2 + 2 * 2 + 1 + 2


def test_resume_continues_with_the_energy_already_spent(make_cfg, tmp_path):
    cfg, _, first = _fake_gpu_run(make_cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    state = torch.load(last, weights_only=False)["callbacks"]
    saved = next(v for k, v in state.items() if "EnergyMonitor" in k)
    assert saved["total_J"] == pytest.approx(first["energy/total_J"])
    _, _, resumed = _fake_gpu_run(make_cfg, "trainer.max_epochs=3", f"ckpt_path={last}")
    # one more epoch (4 J) plus the resumed run's sanity check (1 J) on top of what was spent
    assert resumed["energy/total_J"] == pytest.approx(first["energy/total_J"] + 4.0 + 1.0)
    assert resumed["epochs"] == 3


def test_resuming_with_another_energy_source_is_refused():
    """Joules of two kinds are never summed silently: measured by NVML, resumed on an estimate."""
    from wattwise.utils.errors import ConfigError

    monitor = EnergyMonitor(mode="estimate")
    monitor.meter = EnergyMeter("estimate")
    saved = {"total_J": 5.0, "gpu_J": 5.0, "cpu_J": None, "time_s": 1.0, "samples_seen": 10}
    saved.update(epoch_energies_J=[5.0], source="zeus-nvml")
    with pytest.raises(ConfigError, match="measured by zeus-nvml, this run measures by estimate"):
        monitor.load_state_dict(saved)
    monitor.load_state_dict({**saved, "source": "estimate"})  # the same source resumes
    assert monitor.total_J == 5.0
