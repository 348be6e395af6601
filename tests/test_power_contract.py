"""Power-limit tuning as an energy method: stepping aside, structure changes, the Zeus boundary.

Detection is pinned in every test (Zeus is shown no GPU, or the fake GPU of tests/fake_gpu_power.py),
so the results do not depend on this machine's hardware, and no real card is ever changed.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from fake_gpu import install_fake_gpus
from fake_gpu_power import PowerGPU, expected_limit, install_power_gpu
from omegaconf import OmegaConf
from test_power_limit import (  # noqa: F401 - the autouse fixtures apply here too
    LIMITS,
    LONG_EPOCH,
    TUNE,
    ORIGINAL_mW,
    _run,
    atexit_guard,
    real_tuning_on_the_fake_gpu,
)
from zeus.device.gpu import ZeusGPUNotSupportedError

from wattwise.methods.base import EnergyMethod, NotApplicableError
from wattwise.methods.power.callback import Power
from wattwise.methods.registry import OPTIM_DIR, MethodInfo
from wattwise.train import build
from wattwise.utils.errors import ConfigError


def _fit(cfg) -> None:  # noqa: ANN001
    """`trainer.fit` as train() calls it (train() decides how a NotApplicableError is reported)."""
    parts = build(cfg)
    parts["trainer"].fit(parts["module"], datamodule=parts["datamodule"])


# ---- the contract ---------------------------------------------------------------------------------
def test_it_is_a_registered_energy_method_that_needs_the_energy_monitor():
    assert issubclass(Power, EnergyMethod)
    # registered as the registry reads it: conf/optim/power.yaml's callbacks.power._target_
    path = OPTIM_DIR / "power.yaml"
    target = OmegaConf.select(OmegaConf.load(path), "callbacks.power._target_")
    assert MethodInfo("power", target, path).load_class() is Power
    assert (Power.name, Power.figure_prefix) == ("power", "power/")
    assert "power/status" in Power.summary_keys
    assert "green" in Power.recipes
    tuner = Power()
    assert tuner.requirements() == frozenset({"energy"})
    assert tuner.if_not_applicable == "fail" and tuner.state_key == "wattwise.power"


def test_if_not_applicable_must_be_fail_or_skip():
    with pytest.raises(ConfigError, match=r"^callbacks\.power\.if_not_applicable must be fail or skip"):
        Power(if_not_applicable="ignore")


def test_report_rows_say_what_it_did_or_why_it_stepped_aside():
    assert Power.report_rows({"power/status": "tuned", "power/limit_W": 250}) == [
        ("power limit (power)", "tuned, 250 W")
    ]
    assert Power.report_rows({"power/status": "no_permission"}) == [("power limit (power)", "no_permission")]
    skipped = {"power/status": "skipped", "power/skipped": "no GPU visible to Zeus (no_gpu)"}
    assert Power.report_rows(skipped) == [("power", "skipped: no GPU visible to Zeus (no_gpu)")]
    assert Power.report_rows({}) == []


# ---- stepping aside -------------------------------------------------------------------------------
def test_cpu_only_fit_with_fail_raises_one_line_naming_callbacks_power(make_cfg):
    cfg = make_cfg("+optim=power", "trainer=cpu")
    assert cfg.callbacks.power.if_not_applicable == "fail"  # the default when asked for by name
    with install_fake_gpus([]), pytest.raises(NotApplicableError) as info:  # Zeus sees no GPU
        _fit(cfg)
    message = str(info.value)
    assert "\n" not in message and "no_gpu" in message
    assert "callbacks.power.if_not_applicable=skip" in message and "+optim=power" in message


def test_too_short_epochs_fail_by_default_before_any_limit_changes(make_cfg):
    gpu = PowerGPU(limit_W=275)
    cfg = make_cfg(*TUNE, "trainer.limit_train_batches=1")
    with install_power_gpu(gpu), pytest.raises(NotApplicableError, match="epoch_too_short"):
        _fit(cfg)
    assert gpu.limit_history == [] and gpu.persistence_history == [] and gpu.limit_mW == 275_000


def _stub_trainer(device: str) -> types.SimpleNamespace:
    """Just what on_fit_start reads: the callbacks (no energy monitor here) and the device."""
    return types.SimpleNamespace(
        callbacks=[], strategy=types.SimpleNamespace(root_device=torch.device(device)), is_global_zero=True
    )


@pytest.mark.parametrize("device, reason", [("cuda", "no_meter"), ("cpu", "no_gpu")])
def test_without_the_zeus_meter_it_steps_aside_with_the_reason(device, reason):
    with pytest.raises(NotApplicableError, match=reason):
        Power().on_fit_start(_stub_trainer(device), None)
    tuner = Power(if_not_applicable="skip")
    tuner.on_fit_start(_stub_trainer(device), None)
    figures = tuner.summary_figures()
    assert figures["power/status"] == "skipped" and figures["power/reason"] == reason
    assert reason in figures["power/skipped"] and "power/limit_W" not in figures


class NoPowerManagementGPU(PowerGPU):
    """A GPU whose driver reports no power management (Zeus's not-supported error)."""

    def get_power_management_limit(self) -> int:
        raise ZeusGPUNotSupportedError("power management not supported (fake GPU)")


def test_unreadable_power_limits_with_skip_train_on_without_it(make_cfg):
    gpu = NoPowerManagementGPU(limit_W=275)
    s = _run(make_cfg, gpu, *LONG_EPOCH, "callbacks.power.if_not_applicable=skip")
    assert s["status"] == "completed" and s["power/status"] == "skipped"
    assert s["power/reason"] == "no_power_limits" and "not supported" in s["power/skipped"]
    assert gpu.limit_history == [] and gpu.persistence_history == []


# ---- structure changes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "announce, reprofile_on_change, reprofiles",
    [(True, True, 1), (False, True, 0), (True, False, 0)],
    ids=["announced", "not-announced", "reprofile-off"],
)
def test_an_announced_structure_change_restarts_profiling(
    make_cfg, announce, reprofile_on_change, reprofiles
):
    gpu = PowerGPU(limit_W=275)
    s = _run(
        make_cfg,
        gpu,
        *LONG_EPOCH,
        "trainer.max_epochs=2",
        "callbacks.power.selector=energy",
        f"callbacks.power.reprofile_on_change={str(reprofile_on_change).lower()}",
        "+callbacks.reshape._target_=fake_gpu_power.ReshapeNetAt",
        "+callbacks.reshape.epoch=0",
        f"+callbacks.reshape.announce={str(announce).lower()}",
    )
    assert s["status"] == "completed" and s["power/status"] == "tuned"
    assert s.get("power/reprofiles", 0) == reprofiles
    assert gpu.limit_history.count(300_000) == 1 + reprofiles  # each profile starts at the highest limit
    profiles = list(Path(s["power/profile_file"]).parent.glob("*.json"))
    assert len(profiles) == 1 + reprofiles  # the changed net got its own cached profile
    assert s["power/limit_W"] == expected_limit("energy", LIMITS) and gpu.limit_mW == ORIGINAL_mW


# ---- the Zeus boundary --------------------------------------------------------------------------------
ZEUS_IMPORT = re.compile(r"^\s*(import zeus\b|from zeus\b)", re.MULTILINE)
ALLOWED = {"src/wattwise/methods/shared/zeus_adapter.py", "src/wattwise/energy/meter.py"}


def test_only_the_adapter_and_the_energy_meter_import_zeus():
    src = ROOT / "src" / "wattwise"
    importers = {
        str(path.relative_to(ROOT)) for path in src.rglob("*.py") if ZEUS_IMPORT.search(path.read_text())
    }
    assert importers - ALLOWED == set(), "import Zeus through wattwise.methods.shared.zeus_adapter"
    assert "src/wattwise/methods/shared/zeus_adapter.py" in importers  # the pattern does find imports
    doc = (src / "methods" / "shared" / "zeus_adapter.py").read_text()
    assert "0.16.0" in doc.split('"""')[1]  # the docstring names the Zeus version it was checked with


def test_importing_the_method_does_not_import_zeus():
    import subprocess
    import sys

    code = (
        "import sys, wattwise.methods.power.callback; "
        "print(any(m.split('.')[0] == 'zeus' for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(ROOT / "src")), "PATH": ""},
    )
    assert out.stdout.strip() == "False"


# ---- Zeus's daemon (zeusd) -------------------------------------------------------------------------
def test_a_running_zeusd_changes_limits_without_root(make_cfg, monkeypatch):
    """The card refuses direct NVML changes (no SYS_ADMIN); a fake daemon on a Unix socket, reached
    through Zeus's own ZeusdClient, makes them as root would."""
    from fake_zeusd import running_zeusd

    gpu = PowerGPU(limit_W=275, permitted=False)
    with running_zeusd(gpu) as daemon:
        monkeypatch.setenv("ZEUSD_SOCK_PATH", daemon.server_address)
        s = _run(make_cfg, gpu, *LONG_EPOCH, "callbacks.power.selector=energy")
    assert s["power/status"] == "tuned" and s["power/access"] == "zeusd"
    assert s["power/limit_W"] == expected_limit("energy", LIMITS)
    assert gpu.limit_history[:5] == [w * 1000 for w in LIMITS] and gpu.limit_mW == ORIGINAL_mW
    assert gpu.persistence_history == [True, False] and s["power/restored"] is True
    assert "POST /gpu/set_power_limit" in daemon.requests and "GET /discover" in daemon.requests


def test_a_zeusd_without_gpu_control_falls_back_to_nvml_and_says_no_permission_once(
    make_cfg, monkeypatch, caplog
):
    import logging

    from fake_zeusd import running_zeusd

    caplog.set_level(logging.WARNING, logger="wattwise.methods.power.callback")
    gpu = PowerGPU(limit_W=275, permitted=False)
    with running_zeusd(gpu, control=False) as daemon:
        monkeypatch.setenv("ZEUSD_SOCK_PATH", daemon.server_address)
        s = _run(make_cfg, gpu, *LONG_EPOCH)
    assert s["status"] == "completed" and s["power/status"] == "no_permission"
    assert s["power/access"] == "nvml" and gpu.limit_history == [] and gpu.limit_W == 275
    assert "POST /gpu/set_power_limit" not in daemon.requests
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "permission" in warnings[0].lower() and "zeusd" in warnings[0]


def test_an_unreachable_zeusd_socket_falls_back_to_nvml(monkeypatch, tmp_path):
    from wattwise.methods.shared import zeus_adapter

    monkeypatch.setenv("ZEUSD_SOCK_PATH", str(tmp_path / "nobody-listens.sock"))
    client, why = zeus_adapter.zeusd_client()
    assert client is None and "unreachable" in why
    monkeypatch.delenv("ZEUSD_SOCK_PATH")
    client, why = zeus_adapter.zeusd_client()  # the default socket is pinned absent (the fixture)
    assert client is None and "no zeusd configured" in why


def test_a_structure_change_after_a_cached_choice_profiles_the_new_net(make_cfg):
    overrides = [
        *LONG_EPOCH,
        "trainer.max_epochs=2",
        "callbacks.power.selector=energy",
        "+callbacks.reshape._target_=fake_gpu_power.ReshapeNetAt",
        "+callbacks.reshape.epoch=0",
    ]
    first = _run(make_cfg, PowerGPU(limit_W=275), *overrides)  # caches both nets' profiles
    assert first["power/reprofiles"] == 1
    gpu = PowerGPU(limit_W=275)
    again = _run(make_cfg, gpu, *overrides)  # the first net from the cache, then the pruned one's
    assert again["power/status"] == "cached" and again["power/reprofiles"] == 1
    assert 300_000 not in gpu.limit_history  # nothing was profiled: both choices came from the cache
    assert again["power/limit_W"] == expected_limit("energy", LIMITS) and gpu.limit_mW == ORIGINAL_mW
