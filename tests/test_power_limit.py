"""Power-limit tuning (`+optim=power`): the real callback, Zeus's monitor and selectors, a fake GPU.

The fake GPU (tests/fake_gpu_power.py) models step time and power draw as functions of the
limit, on a virtual clock that Zeus reads, so what Zeus measures is exactly the model and the
optimum of each selector can be computed from the model beforehand.
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from fake_gpu import install_fake_gpus
from fake_gpu_power import STEP_TIME_REL, PowerGPU, expected_limit, install_power_gpu, step_time_s

from wattwise.methods.power.callback import Power, make_selector
from wattwise.methods.power.plan import limits_W, segment_batches
from wattwise.methods.power.profiler import block_size
from wattwise.train import train
from wattwise.utils.errors import ConfigError

LIMITS = sorted(STEP_TIME_REL, reverse=True)  # 300 ... 100 W: the fake GPU's range at pl_step_W=50
ORIGINAL_mW = 275_000  # a user-set cap that is not on the profile grid, so a restore is unambiguous
TUNE = [
    "+optim=power",
    "energy.gpu_index=0",  # measure fake GPU 0 while the trainer runs on the CPU
    "callbacks.power.pl_step_W=50",
    "callbacks.power.warmup_steps=1",
    "callbacks.power.profile_steps=2",
    "data.batch_size=16",
    "+callbacks.gpu_model._target_=fake_gpu_power.StepModel",
]
LONG_EPOCH = ["trainer.limit_train_batches=20"]  # 1 wait + 5 limits x 3 steps fit in one epoch
LOGGER = "wattwise.methods.power.callback"
BASE_LOGGER = "wattwise.methods.base"  # where a method's step-aside line is logged


@pytest.fixture(autouse=True)
def real_tuning_on_the_fake_gpu(monkeypatch, tmp_path):
    """These tests drive a fake GPU, so they lift conftest's forced dry run (the no-GPU test pins
    Zeus to see no GPU at all, so it cannot touch a real one either). No Zeus daemon is seen,
    whatever this machine runs: tests of the daemon start their own (tests/fake_zeusd.py)."""
    import wattwise.methods.shared.zeus_adapter as adapter

    monkeypatch.delenv("WATTWISE_POWER_DRY_RUN", raising=False)
    for name in ("ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT", "ZEUSD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(adapter, "ZEUSD_DEFAULT_SOCKET", tmp_path / "no-zeusd.sock")


@pytest.fixture(autouse=True)
def atexit_guard(monkeypatch):
    """Zeus's atexit hook (it sets the MAXIMUM limit at exit) must never be registered, and the
    tuner's own hook (it restores the original limit) must be gone once the fit is over."""
    import zeus.optimizer.power_limit as zpl

    import wattwise.methods.power.guard as ours

    zeus_registered, live = [], []

    class _ZeusRecorder:
        @staticmethod
        def register(func, *args, **kwargs):
            zeus_registered.append(func)

    class _OursSpy:
        @staticmethod
        def register(func, *args, **kwargs):
            live.append(func)
            return atexit.register(func, *args, **kwargs)

        @staticmethod
        def unregister(func):
            live[:] = [f for f in live if f != func]
            atexit.unregister(func)

    monkeypatch.setattr(zpl, "atexit", _ZeusRecorder)
    monkeypatch.setattr(ours, "atexit", _OursSpy)
    yield
    assert zeus_registered == [], "Zeus's atexit hook was registered"
    assert live == [], "the tuner left its atexit hook behind"


def _run(make_cfg, gpu: PowerGPU, *overrides: str, expect: type[BaseException] | None = None) -> dict:
    cfg = make_cfg(*TUNE, *overrides)
    with install_power_gpu(gpu):
        if expect is None:
            train(cfg)
        else:
            with pytest.raises(expect):
                train(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    summary["_run_dir"] = cfg.paths.output_dir
    return summary


def _tuner(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k.startswith("power/")}


# ---- choosing ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "selector_overrides, selector, kwargs",
    [
        (["callbacks.power.selector=energy"], "energy", {}),
        (["callbacks.power.selector=time"], "time", {}),
        (["callbacks.power.selector=zeus_cost", "callbacks.power.eta=0.5"], "zeus_cost", {"eta": 0.5}),
        (
            ["callbacks.power.selector=max_slowdown", "callbacks.power.max_slowdown=1.05"],
            "max_slowdown",
            {"factor": 1.05},
        ),
    ],
)
def test_each_selector_ends_at_the_limit_the_model_makes_optimal(
    make_cfg, selector_overrides, selector, kwargs
):
    want = expected_limit(selector, LIMITS, **kwargs)
    gpu = PowerGPU(limit_W=ORIGINAL_mW // 1000)
    s = _run(make_cfg, gpu, *LONG_EPOCH, *selector_overrides)

    assert s["status"] == "completed"
    assert s["power/status"] == "tuned" and s["power/access"] == "nvml"  # no daemon here: NVML directly
    assert s["power/limit_W"] == want
    # every limit was measured, and Zeus's monitor measured the model: time per batch is the model's
    assert sorted(map(int, s["power/profile"]), reverse=True) == LIMITS == s["power/limits_tried_W"]
    for limit, m in s["power/profile"].items():
        assert m["step_time_s"] == pytest.approx(step_time_s(int(limit)), rel=1e-6)
        assert m["steps"] == 2 and m["time_rsd"] == pytest.approx(0.0, abs=1e-9)  # no noise: no spread
    assert "power/confirmed_W" not in s  # nothing was within the (zero) noise of the pick
    # it profiled highest first, then trained at the choice, then put the ORIGINAL limit back
    assert gpu.limit_history[:5] == [w * 1000 for w in LIMITS]
    assert gpu.limit_history[-2:] == [want * 1000, ORIGINAL_mW]
    assert gpu.limit_mW == ORIGINAL_mW and s["power/restored"] is True
    assert gpu.persistence is False and gpu.persistence_history == [True, False]  # mode left as found
    assert gpu.step_limits_W[-3:] == [want] * 3  # the end of the epoch ran at the choice
    # after choosing, training steps read no energy: the count stays put from step to step
    assert len(gpu.reads_after_choice) >= 3 and len(set(gpu.reads_after_choice)) == 1
    # the limit was logged as it changed: every profiled limit, then the choice
    logged = _logged_limits(s["_run_dir"])
    assert set(LIMITS) <= set(logged) and logged[-1] == want


def _logged_limits(run_dir: str) -> list[int]:
    with (Path(run_dir) / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [int(float(r["power/limit_W"])) for r in rows if r.get("power/limit_W")]


def test_zeus_cost_gets_the_world_size_so_ddp_is_not_biased():
    from zeus.optimizer.power_limit import PowerLimitMeasurement, ZeusCost

    measurements = [
        PowerLimitMeasurement(power_limit=lim, time=step_time_s(lim), energy=step_time_s(lim) * min(lim, 270))
        for lim in LIMITS
    ]
    one, four = (
        make_selector("zeus_cost", eta=0.5, world_size=1),
        make_selector("zeus_cost", eta=0.5, world_size=4),
    )
    assert isinstance(four, ZeusCost) and four.world_size == 4
    # measurements summed over 4 GPUs must be weighed against 4 GPUs' max power, else the choice moves
    summed = [
        PowerLimitMeasurement(power_limit=m.power_limit, time=m.time, energy=4 * m.energy)
        for m in measurements
    ]
    assert four.select(summed) == expected_limit("zeus_cost", LIMITS, eta=0.5, world_size=1)
    assert one.select(summed) != four.select(summed)


# ---- cache, dry run, re-profiling ---------------------------------------------------------------
@pytest.mark.slow
def test_env_switch_forces_a_dry_run(make_cfg, monkeypatch):
    monkeypatch.setenv("WATTWISE_POWER_DRY_RUN", "1")
    gpu = PowerGPU(limit_W=275)
    s = _run(make_cfg, gpu, *LONG_EPOCH)
    assert gpu.limit_history == [] and s["power/status"] == "dry_run"
    assert s["power/dry_run"]["forced_by_env"] is True


def test_profile_cache_skips_profiling_and_dry_run_changes_nothing(make_cfg):
    first = _run(make_cfg, PowerGPU(limit_W=275), *LONG_EPOCH, "callbacks.power.selector=energy")
    assert first["power/status"] == "tuned"
    cache = Path(first["power/profile_file"])
    assert cache.is_file() and cache.parent.name == "power_profiles"

    # dry run: no limit or mode change at all, and it says what it would do
    dry_gpu = PowerGPU(limit_W=275)
    dry = _run(
        make_cfg, dry_gpu, *LONG_EPOCH, "callbacks.power.selector=energy", "callbacks.power.dry_run=true"
    )
    assert dry_gpu.limit_history == [] and dry_gpu.persistence_history == []
    assert dry["power/status"] == "dry_run" and dry["power/limit_W"] == 275
    plan = dry["power/dry_run"]
    assert plan["would_profile_W"] == LIMITS and plan["changed"] == "nothing"
    assert plan["cached_profile"] is True and plan["would_choose_W"] == expected_limit("energy", LIMITS)

    # a repeat run, even with another selector, chooses from the cache: no profiling
    gpu = PowerGPU(limit_W=275)
    again = _run(make_cfg, gpu, *LONG_EPOCH, "callbacks.power.selector=time")
    assert again["power/status"] == "cached"
    assert again["power/limit_W"] == expected_limit("time", LIMITS)
    assert gpu.limit_history == [expected_limit("time", LIMITS) * 1000, ORIGINAL_mW]


def test_the_profile_key_covers_gpu_net_input_batch_precision_and_world_size(tmp_path):
    tuner = Power(profile_dir=str(tmp_path))
    key = {
        "gpu": "NVIDIA H100 80GB HBM3",
        "net": "0123abcd",
        "input_shape": [3, 32, 32],
        "batch_size": 128,
        "precision": "bf16-mixed",
        "world_size": 1,
        "pl_step_W": 25,
        "limits_mW": [200000, 700000],
    }
    path = tuner._profile_path(key)
    assert path.parent == tmp_path and "H100" in path.name and "bs128" in path.name
    for field, other in [
        ("gpu", "NVIDIA A100"),
        ("net", "ffff0000"),
        ("input_shape", [3, 64, 64]),
        ("batch_size", 256),
        ("precision", "32-true"),
        ("world_size", 4),
        ("pl_step_W", 50),
    ]:
        assert tuner._profile_path({**key, field: other}) != path, field
    assert Power(profile_dir=None)._profile_path(key) is None


def test_dry_run_without_a_cache_lists_the_limits_it_would_try(make_cfg):
    gpu = PowerGPU(limit_W=275)
    s = _run(make_cfg, gpu, *LONG_EPOCH, "callbacks.power.dry_run=true")
    assert gpu.limit_history == [] and gpu.persistence_history == []
    plan = s["power/dry_run"]
    assert plan["would_profile_W"] == LIMITS and plan["would_choose_W"] is None
    assert (plan["warmup_steps"], plan["profile_steps"]) == (1, 2)
    assert not Path(plan["profile_file"]).exists()


# ---- short epochs ---------------------------------------------------------------------------------
def test_the_grid_spans_the_whole_range_minimum_and_maximum_included():
    assert limits_W((100_000, 260_000), 25) == [260, 250, 225, 200, 175, 150, 125, 100]  # RTX 6000
    assert limits_W((100_000, 300_000), 50) == [300, 250, 200, 150, 100]
    assert limits_W((200_000, 700_000), 25)[-1] == 200 and limits_W((200_000, 700_000), 25)[0] == 700
    assert limits_W((250_000, 260_000), 25) == [260, 250]
    assert limits_W((150_000, 150_000), 25) == [150]  # a card with one limit


def test_profiles_pause_at_the_shortest_stretch_and_blocks_hold_whole_optimizer_steps():
    assert segment_batches(100, 100) == 100
    assert segment_batches(100, 7) == 7  # val_check_interval=7: validation every 7 batches
    assert segment_batches(float("inf"), 5) == 5
    assert segment_batches(12, float("inf")) == 12
    assert block_size(40, 4) == 10 and block_size(2, 4) == 1  # never more blocks than batches
    assert block_size(40, 4, accumulate=4) == 12  # a block is a whole number of optimizer steps


def test_short_epochs_still_finish_profiling(make_cfg):
    gpu = PowerGPU(limit_W=275)
    # 4 batches per epoch against 2 warm-up + 4 profile steps per limit: each limit spans epochs
    s = _run(
        make_cfg,
        gpu,
        "trainer.limit_train_batches=4",
        "trainer.max_epochs=12",
        "trainer.limit_val_batches=1",
        "callbacks.power.warmup_steps=2",
        "callbacks.power.profile_steps=4",
        "callbacks.power.selector=energy",
    )
    assert s["power/status"] == "tuned"
    assert s["power/limit_W"] == expected_limit("energy", LIMITS)
    profile = s["power/profile"]
    assert sorted(map(int, profile), reverse=True) == LIMITS
    assert all(m["steps"] == 4 for m in profile.values())  # every limit got its 4 measured batches ...
    assert any(m["blocks"] > 2 for m in profile.values())  # ... some in blocks cut by an epoch end
    assert gpu.limit_mW == ORIGINAL_mW


def test_gradient_accumulation_measures_whole_optimizer_steps(make_cfg):
    gpu = PowerGPU(limit_W=275)
    s = _run(
        make_cfg,
        gpu,
        *LONG_EPOCH,
        "+trainer.accumulate_grad_batches=2",
        "callbacks.power.selector=energy",
        "callbacks.power.blocks=2",  # 2 profile steps in 2 blocks would split an optimizer step
    )
    assert s["power/status"] == "tuned" and s["power/limit_W"] == expected_limit("energy", LIMITS)
    assert all(m["blocks"] == 1 and m["steps"] == 2 for m in s["power/profile"].values())
    assert gpu.limit_mW == ORIGINAL_mW


def test_too_short_epochs_leave_the_limit_alone(make_cfg):
    gpu = PowerGPU(limit_W=275)
    s = _run(make_cfg, gpu, "trainer.limit_train_batches=1", "callbacks.power.if_not_applicable=skip")
    assert s["status"] == "completed" and s["power/status"] == "skipped"
    assert s["power/reason"] == "epoch_too_short" and "too few" in s["power/skipped"]
    assert gpu.limit_history == []


# ---- restoring ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("exc, raised", [("RuntimeError", RuntimeError), ("KeyboardInterrupt", SystemExit)])
def test_original_limit_is_restored_after_an_exception_inside_training(make_cfg, exc, raised):
    gpu = PowerGPU(limit_W=275)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        # step 6 is mid-profile (the limit is already below the original)
        s = _run(
            make_cfg,
            gpu,
            *LONG_EPOCH,
            "+callbacks.boom._target_=fake_gpu_power.RaiseAt",
            "+callbacks.boom.step=6",
            f"+callbacks.boom.exc={exc}",
            expect=raised,
        )
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after a KeyboardInterrupt
    assert min(gpu.limit_history) < ORIGINAL_mW  # it was tuning when the exception came
    assert gpu.limit_history[-1] == ORIGINAL_mW and gpu.limit_mW == ORIGINAL_mW  # the original, not the max
    assert gpu.persistence is False
    assert s["status"] in ("failed", "interrupted") and s["power/restored"] is True


@pytest.mark.slow
def test_sigterm_to_a_training_subprocess_restores_the_original_limit_and_chains_the_handler(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        "PYTHONUNBUFFERED": "1",
    }
    code = f"import fake_gpu_power as f; f.sigterm_child({str(tmp_path)!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    waiting = tmp_path / "waiting.txt"
    deadline = time.monotonic() + 180
    while not waiting.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not waiting.exists():
        proc.kill()
        pytest.fail("the child never reached a lowered limit:\n" + proc.stdout.read().decode()[-3000:])
    assert int(waiting.read_text()) < ORIGINAL_mW  # it is running below the original limit now
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0].decode()

    history = (tmp_path / "history.txt").read_text().split("\n")
    limits = [int(line.split()[1]) for line in history if line.startswith("limit")]
    assert 300_000 in limits  # profiling went through the maximum ...
    assert limits[-1] == ORIGINAL_mW, out[-3000:]  # ... but the original came back, and stayed after exit
    assert [line for line in history if line.startswith("persistence")][-1] == "persistence 0"
    # the handler installed before training still ran, after the limit was already restored
    assert int((tmp_path / "chained.txt").read_text()) == ORIGINAL_mW


# ---- no permission, no GPU, bad settings ---------------------------------------------------------------
@pytest.mark.parametrize(
    "gpu_kwargs, where",
    [
        ({"limit_W": 275, "persistence": False}, "at construction: persistence mode cannot be set"),
        ({"limit_W": 300, "persistence": True}, "mid-training: the first lower limit is refused"),
    ],
)
def test_no_permission_trains_on_with_one_warning(make_cfg, caplog, gpu_kwargs, where):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    gpu = PowerGPU(permitted=False, **gpu_kwargs)
    s = _run(make_cfg, gpu, *LONG_EPOCH)
    assert s["status"] == "completed", where
    assert s["power/status"] == "no_permission"
    assert s["power/limit_W"] == gpu_kwargs["limit_W"] == gpu.limit_W
    assert gpu.limit_history == [] and gpu.persistence_history == []
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "permission" in warnings[0].getMessage().lower()


class FrozenCounterGPU(PowerGPU):
    """A counter that does not move within a profile window (a window shorter than NVML's update
    period on a real card): Zeus then refuses the measurement (energy must be > 0)."""

    def get_total_energy_consumption(self) -> int:
        self.energy_reads.append(1.0)
        return 1000


def test_a_profile_window_that_reads_zero_joules_stops_tuning_not_training(make_cfg, caplog):
    # Seen on an H100: tiny windows read 0 J and Zeus raised a pydantic ValidationError mid-epoch.
    caplog.set_level(logging.WARNING, logger=LOGGER)
    gpu = FrozenCounterGPU(limit_W=275)
    s = _run(make_cfg, gpu, *LONG_EPOCH)
    assert s["status"] == "completed"
    assert s["power/status"] == "error"
    assert gpu.limit_W == 275  # the original limit is back
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "read 0 J" in warnings[0]


def test_no_gpu_with_skip_the_option_steps_aside_in_one_line_and_the_run_proceeds(make_cfg, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    caplog.set_level(logging.WARNING, logger=BASE_LOGGER)
    cfg = make_cfg("+optim=power", "trainer=cpu", "callbacks.power.if_not_applicable=skip")
    with install_fake_gpus([]):  # Zeus sees no GPU, whatever this machine has
        train(cfg)
    s = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert s["status"] == "completed" and s["power/status"] == "skipped"
    assert s["power/reason"] == "no_gpu" and "no GPU" in s["power/skipped"]
    assert "power/limit_W" not in s
    messages = [r.getMessage() for r in caplog.records if r.name in (LOGGER, BASE_LOGGER)]
    assert len(messages) == 1 and "steps aside" in messages[0] and "no_gpu" in messages[0]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"selector": "fastest"}, "callbacks.power.selector"),
        ({"eta": 1.5}, "callbacks.power.eta"),
        ({"max_slowdown": 0.9}, "callbacks.power.max_slowdown"),
        ({"warmup_steps": 0}, "callbacks.power.warmup_steps"),  # Zeus's own state machine rejects 0 mid-run
        ({"profile_steps": 0}, "callbacks.power.profile_steps"),
        ({"pl_step_W": 0}, "callbacks.power.pl_step_W"),
    ],
)
def test_bad_settings_fail_fast_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}"):
        Power(**kwargs)


def test_bad_setting_from_the_config_is_a_config_error(make_cfg):
    with pytest.raises(ConfigError, match="^callbacks.power.selector must be one of"):
        train(make_cfg("+optim=power", "callbacks.power.selector=fastest"))
