"""A live grid-intensity provider: Electricity Maps' HTTP API (v3), one bounded request per question.

Two questions are asked, each by one GET with a timeout and no retry (a failing provider costs a
run at most `timeout_s` per question, and the caller falls back):

- `latest(zone)`: `GET {endpoint}/v3/carbon-intensity/latest?zone=<zone>` -> the hour's gCO2e/kWh;
- `forecast(zone)`: `GET {endpoint}/v3/carbon-intensity/forecast?zone=<zone>` -> hourly points ahead.

The API key travels in the `auth-token` header; it comes from `energy.provider.api_key` or, when that
is null (the default), from the `ELECTRICITYMAPS_API_KEY` environment variable, read when the run
starts, so the key is never written into the run's resolved config or logged hyperparameters.
Any other provider plugs in by offering the same two methods (`IntensityProvider`) and a name in
`PROVIDERS`.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from wattwise.utils.errors import ConfigError

ELECTRICITY_MAPS = "electricitymaps"
ELECTRICITY_MAPS_URL = "https://api.electricitymap.org"
API_KEY_ENV = (
    "ELECTRICITYMAPS_API_KEY"  # read at run time: a key never lands in the saved config or the loggers
)
MAX_RESPONSE_BYTES = 1 << 20  # a forecast is a few kB; never read an unbounded body


class ProviderError(Exception):
    """The provider gave no usable answer (no key, refused, timed out, malformed): one line."""


@dataclass(frozen=True)
class ForecastPoint:
    start: datetime  # UTC, the start of the hour the figure is for
    gCO2_per_kWh: float


@dataclass(frozen=True)
class ProviderSettings:
    """`energy.provider`: which API, where, with which key, and how long one request may take."""

    name: str = ELECTRICITY_MAPS
    endpoint: str | None = None  # null: the provider's public URL
    api_key: str | None = None
    timeout_s: float = 5.0

    @property
    def enabled(self) -> bool:
        """A provider is asked only when a key or an endpoint (a self-hosted or test server) is set."""
        return bool(self.api_key) or bool(self.endpoint)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ProviderSettings:
        unknown = set(data) - {"name", "endpoint", "api_key", "timeout_s"}
        if unknown:
            raise ConfigError(
                f"energy.provider.{sorted(unknown)[0]} is unknown; use name, endpoint, api_key, timeout_s"
            )
        name = data.get("name") or ELECTRICITY_MAPS
        if name not in PROVIDERS:
            raise ConfigError(f"energy.provider.name must be one of {sorted(PROVIDERS)}, got {name!r}")
        timeout = data.get("timeout_s", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
            raise ConfigError(f"energy.provider.timeout_s must be in (0, 60] seconds, got {timeout!r}")
        key = data.get("api_key") or os.environ.get(API_KEY_ENV)
        return cls(str(name), data.get("endpoint") or None, str(key) if key else None, float(timeout))


class IntensityProvider(Protocol):
    name: str

    def latest(self, zone: str) -> tuple[float, str]: ...

    def forecast(self, zone: str) -> list[ForecastPoint]: ...


Opener = Callable[..., Any]


class ElectricityMaps:
    """Electricity Maps v3 (see module doc). `opener` is urllib's, replaceable in tests."""

    name = ELECTRICITY_MAPS

    def __init__(self, settings: ProviderSettings, opener: Opener = urllib.request.urlopen) -> None:
        self.endpoint = (settings.endpoint or ELECTRICITY_MAPS_URL).rstrip("/")
        self.api_key = settings.api_key
        self.timeout_s = settings.timeout_s
        self._open = opener

    def _get(self, path: str, zone: str) -> dict[str, Any]:
        url = f"{self.endpoint}{path}?{urllib.parse.urlencode({'zone': zone})}"
        headers = {"auth-token": self.api_key} if self.api_key else {}
        request = urllib.request.Request(url, headers=headers)
        try:
            with self._open(request, timeout=self.timeout_s) as response:
                body = response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as err:
            raise ProviderError(f"{self.name} answered HTTP {err.code} for {path}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ProviderError(f"{self.name} unreachable ({reason})") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise ProviderError(f"{self.name} sent a response that is not JSON for {path}") from None
        if not isinstance(data, dict):
            raise ProviderError(f"{self.name} sent an unexpected response for {path}")
        return data

    def latest(self, zone: str) -> tuple[float, str]:
        """The zone's intensity now, and the time it is for (as the provider wrote it)."""
        data = self._get("/v3/carbon-intensity/latest", zone)
        value = data.get("carbonIntensity")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ProviderError(f"{self.name} sent no carbonIntensity for zone {zone}")
        return float(value), str(data.get("datetime", "?"))

    def forecast(self, zone: str) -> list[ForecastPoint]:
        """The zone's forecast, hourly points in time order (possibly empty)."""
        data = self._get("/v3/carbon-intensity/forecast", zone)
        points = []
        for p in data.get("forecast") or []:
            try:
                start = parse_time(p["datetime"])
                value = float(p["carbonIntensity"])
            except (KeyError, TypeError, ValueError):
                continue
            points.append(ForecastPoint(start, value))
        return sorted(points, key=lambda p: p.start)


def parse_time(text: str) -> datetime:
    """ISO 8601 with a `Z` or an offset, as providers write it, to an aware UTC datetime."""
    t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


PROVIDERS: dict[str, type] = {ELECTRICITY_MAPS: ElectricityMaps}


def make_provider(settings: ProviderSettings, opener: Opener | None = None) -> IntensityProvider:
    cls = PROVIDERS[settings.name]
    return cls(settings) if opener is None else cls(settings, opener)
