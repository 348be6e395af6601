"""Carbon: region table, PUE arithmetic, the live provider (a fake one on loopback) and its fallbacks,
the carbon-aware start (injected clock and sleep: nothing really waits), and SLURM's sacct."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest
from fake_intensity_provider import Script, fake_provider, hourly

from wattwise.energy.carbon import grams_CO2e, resolve_intensity
from wattwise.energy.intensity_provider import ProviderError, ProviderSettings, make_provider
from wattwise.energy.monitor import EnergyMonitor
from wattwise.energy.regions import lookup_region
from wattwise.methods.carbon_aware.callback import CarbonAware, plan_start, wait_until
from wattwise.utils.errors import ConfigError
from wattwise.utils.slurm_energy import parse_consumed_energy, read_slurm_energy

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


# ---- the offline table and PUE --------------------------------------------------------------------
def test_region_lookup_reads_the_shipped_table_by_country_zone_and_cloud_region():
    de = lookup_region("DE")
    assert (de.zone, de.table.gCO2_per_kWh, de.table.year) == ("DE", 380.9, 2023)  # the file's DE row
    assert lookup_region("deu").table == de.table  # alpha-3, any case
    pjm = lookup_region("US-MIDA-PJM")  # a grid zone counts at its country's average offline
    assert pjm.zone == "US-MIDA-PJM" and pjm.table.iso2 == "US" and "country's average" in pjm.table_note
    aws = lookup_region("eu-west-1")
    assert aws.zone == "IE" and aws.table.gCO2_per_kWh == 290.8 and "Dublin" in aws.location
    assert lookup_region("westeurope").zone == "NL"


def test_an_unknown_region_fails_in_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"energy\.region='Atlantis'") as err:
        lookup_region("Atlantis")
    assert "\n" not in str(err.value)


def test_pue_arithmetic_on_hand_computed_values():
    # 1 kWh at the devices, PUE 1.5, 380.9 g/kWh: 1.5 kWh at the facility, 571.35 g
    assert grams_CO2e(3.6e6, 1.5, 380.9) == pytest.approx(571.35)
    monitor = EnergyMonitor(mode="estimate", region="FR", pue=1.2)
    figures = monitor.carbon_figures(7.2e6)  # 2 kWh at the devices
    assert figures["energy/facility_J"] == pytest.approx(8.64e6)
    assert figures["carbon/intensity_gCO2_per_kWh"] == 56.0  # France 2023 in the table
    assert figures["carbon/gCO2e"] == pytest.approx(2.4 * 56.0)
    assert figures["carbon/intensity_source"].startswith("table: OWID")
    default = EnergyMonitor(mode="estimate").carbon_figures(3.6e6)  # no region: the configured 475, PUE 1
    assert default["carbon/gCO2e"] == pytest.approx(475.0) and default["energy/pue"] == 1.0
    assert "configured" in default["carbon/intensity_source"]


def test_a_pue_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"energy\.pue must be a number >= 1\.0"):
        EnergyMonitor(mode="estimate", pue=0.9)


# ---- the live provider ----------------------------------------------------------------------------
def test_live_intensity_comes_from_the_provider_with_its_source_stated():
    script = Script(latest=123.0)
    with fake_provider(script) as url:
        got = resolve_intensity("DE", 475.0, ProviderSettings(endpoint=url, api_key="k", timeout_s=2))
    assert got.gCO2_per_kWh == 123.0 and got.source.startswith("live: electricitymaps zone DE")
    assert script.requests == [{"path": "/v3/carbon-intensity/latest", "zone": "DE", "token": "k"}]


@pytest.mark.parametrize("failure", ["http_error", "timeout"])
def test_a_failing_provider_falls_back_to_the_table_and_says_so(failure):
    script = Script(status=503) if failure == "http_error" else Script(delay_s=1.5)
    with fake_provider(script) as url:
        t0 = time.monotonic()
        got = resolve_intensity("eu-west-1", 475.0, ProviderSettings(endpoint=url, timeout_s=0.3))
        took = time.monotonic() - t0
    assert got.gCO2_per_kWh == 290.8  # Ireland in the table
    assert "electricitymaps failed" in got.source
    assert took < 1.2 and len(script.requests) == 1  # bounded by the timeout, asked once, no retry


def test_no_key_and_no_endpoint_never_asks():
    assert not ProviderSettings().enabled
    got = resolve_intensity("DE", 475.0, ProviderSettings())
    assert got.source.startswith("table:")


def test_the_forecast_is_parsed_in_time_order():
    script = Script(forecast=hourly(NOW, [300, 200])[::-1])
    with fake_provider(script) as url:
        points = make_provider(ProviderSettings(endpoint=url)).forecast("DE")
    assert [(p.start, p.gCO2_per_kWh) for p in points] == [(NOW, 300.0), (NOW + timedelta(hours=1), 200.0)]


def test_a_non_json_answer_is_a_provider_error():
    class Body:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self, n):
            return b"<html>"

    client = make_provider(ProviderSettings(endpoint="http://x"), opener=lambda req, timeout: Body())
    with pytest.raises(ProviderError, match="not JSON"):
        client.latest("DE")


# ---- the carbon-aware start -----------------------------------------------------------------------
FORECAST = [300, 250, 120, 100, 400, 50, 60]  # hourly from NOW; 2 h windows: 275, 185, 110, 250, 225, 55


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.t = start.timestamp()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def aware(url: str | None, deadline_h: float, clock: FakeClock, timeout_s: float = 2.0) -> CarbonAware:
    provider = {"endpoint": url, "api_key": "k", "timeout_s": timeout_s} if url else None
    cb = CarbonAware(deadline_h=deadline_h, duration_s=7200, region="DE", provider=provider)
    cb.clock, cb.sleep = clock.clock, clock.sleep
    return cb


def test_plan_picks_the_forecasts_lowest_window_before_the_deadline():
    from wattwise.energy.intensity_provider import ForecastPoint

    points = [ForecastPoint(t, v) for t, v in hourly(NOW, FORECAST)]
    plan = plan_start(points, NOW, 7200, NOW + timedelta(hours=4))
    assert plan.start == NOW + timedelta(hours=2) and plan.window_gCO2_per_kWh == pytest.approx(110)
    assert plan.now_gCO2_per_kWh == pytest.approx(275) and plan.wait_s == 7200
    # the 55 g window at +5 h lies past a 4 h deadline; with 6 h it wins (its window is fully covered)
    assert plan_start(points, NOW, 7200, NOW + timedelta(hours=6)).start == NOW + timedelta(hours=5)


def test_delayed_start_waits_for_the_best_window_in_bounded_steps():
    clock = FakeClock(NOW)
    script = Script(forecast=hourly(NOW, FORECAST))
    with fake_provider(script) as url:
        cb = aware(url, deadline_h=4, clock=clock)
        cb.setup(None, None, "fit")
    assert cb.decision == "waited" and cb.wait_s == pytest.approx(7200)
    assert max(clock.sleeps) <= 60 and sum(clock.sleeps) == pytest.approx(7200)
    assert "110 gCO2e/kWh" in cb.reason and "275" in cb.reason
    figures = cb.summary_figures()
    assert figures["carbon_aware/window_gCO2_per_kWh"] == pytest.approx(110)
    assert script.requests[0]["path"] == "/v3/carbon-intensity/forecast"


def test_delayed_start_respects_the_deadline():
    clock = FakeClock(NOW)
    with fake_provider(Script(forecast=hourly(NOW, FORECAST))) as url:
        cb = aware(url, deadline_h=1, clock=clock)  # only now (275) and +1 h (185) may start
        cb.setup(None, None, "fit")
    assert cb.wait_s == pytest.approx(3600)
    # and the wait itself never runs past the deadline, whatever it was asked
    clock2 = FakeClock(NOW)
    waited = wait_until(clock2.t + 10_000, clock2.t + 90, clock2.clock, clock2.sleep)
    assert waited == pytest.approx(90) and clock2.sleeps == [60, 30]


@pytest.mark.parametrize("failure", ["http_error", "timeout", "no_key", "empty"])
def test_delayed_start_starts_at_once_without_a_forecast(failure):
    clock = FakeClock(NOW)
    script = {
        "http_error": Script(status=500),
        "timeout": Script(delay_s=1.5, forecast=hourly(NOW, FORECAST)),
        "no_key": Script(),
        "empty": Script(forecast=[]),
    }[failure]
    with fake_provider(script) as url:
        cb = aware(None if failure == "no_key" else url, deadline_h=6, clock=clock, timeout_s=0.3)
        t0 = time.monotonic()
        cb.setup(None, None, "fit")
        took = time.monotonic() - t0
    assert cb.decision == "started_now" and cb.wait_s == 0 and clock.sleeps == []
    assert "starting at once" in cb.reason and took < 1.2
    assert len(script.requests) == (0 if failure == "no_key" else 1)


def test_carbon_aware_bad_setting_names_the_key():
    with pytest.raises(ConfigError, match=r"callbacks\.carbon_aware\.deadline_h"):
        CarbonAware(deadline_h=-1)


# ---- SLURM's own accounting -----------------------------------------------------------------------
def _fake_sacct(tmp_path, monkeypatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "sacct"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")


def test_a_fake_sacct_on_path_is_read(tmp_path, monkeypatch):
    # the job line, then its steps (batch, extern); the job's figure is the largest
    _fake_sacct(tmp_path, monkeypatch, 'echo "$@" > "$(dirname "$0")/args"; printf "5400\\n5100\\n12\\n"')
    got = read_slurm_energy(timeout_s=5)
    assert got is not None and got.job_id == "4242" and got.consumed_J == 5400.0
    args = (tmp_path / "bin" / "args").read_text().split()
    assert args == ["-j", "4242", "--format=ConsumedEnergyRaw", "--noheader", "--parsable2"]


def test_sacct_without_energy_or_too_slow_gives_no_figure(tmp_path, monkeypatch):
    _fake_sacct(tmp_path, monkeypatch, 'printf "\\n0\\n"')
    got = read_slurm_energy(timeout_s=5)
    assert got.consumed_J is None and "records no energy" in got.note
    (tmp_path / "bin" / "sacct").write_text("#!/bin/sh\nexec sleep 5\n")
    t0 = time.monotonic()
    slow = read_slurm_energy(timeout_s=0.3)
    assert slow.consumed_J is None and "did not answer" in slow.note and time.monotonic() - t0 < 3


def test_outside_slurm_sacct_is_not_called(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert read_slurm_energy() is None
    assert parse_consumed_energy("|\nabc\n") is None


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("energy.region=Atlantis", "energy.region"),
        ("energy.pue=0.5", "energy.pue"),
        ("energy.provider.timeout_s=0", "energy.provider.timeout_s"),
        ("+energy.provider.token=x", "energy.provider.token"),
    ],
)
def test_carbon_settings_are_checked_before_the_run_is_built(make_cfg, override, key):
    from wattwise.utils.validate import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(override))
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_the_key_comes_from_the_environment_at_run_time_and_never_enters_the_config(make_cfg, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setenv("ELECTRICITYMAPS_API_KEY", "s3cret")
    cfg = make_cfg("energy.region=DE")
    assert "s3cret" not in OmegaConf.to_yaml(cfg, resolve=True)  # what the loggers' hyperparameters get
    script = Script(latest=99.0)
    with fake_provider(script) as url:
        node = {**OmegaConf.to_container(cfg.energy.provider, resolve=True), "endpoint": url}
        monitor = EnergyMonitor(mode="estimate", region="DE", provider=node)
        got = resolve_intensity(monitor.region, 475.0, monitor.provider)
    assert got.gCO2_per_kWh == 99.0 and script.requests[0]["token"] == "s3cret"


def test_the_wait_is_interruptible():
    def interrupted(_s: float) -> None:
        raise KeyboardInterrupt  # Ctrl+C during a sleep step: the wait ends, as any run would

    with pytest.raises(KeyboardInterrupt):
        wait_until(1000.0, 2000.0, lambda: 0.0, interrupted)
