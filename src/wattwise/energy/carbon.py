"""The run's carbon: which grid intensity applies, where the figure came from, and the PUE arithmetic.

The intensity is, in order: the live figure from a provider (when `energy.provider` is configured
and `energy.region` names a zone), else the shipped table's annual average for `energy.region`,
else `energy.grid_gCO2_per_kWh` (world average 475 by default). The source always travels with
the figure (`carbon/intensity_source`), so a summary never shows a number without saying what it is.

PUE (`energy.pue`, default 1.0: the energy the devices draw, no data-centre overhead counted) scales
what the devices drew to what the facility drew: `energy/facility_J = energy/total_J x pue`, and
carbon is computed from the facility's energy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wattwise.energy.intensity_provider import ProviderError, ProviderSettings, make_provider
from wattwise.energy.regions import lookup_region
from wattwise.utils.errors import ConfigError

log = logging.getLogger(__name__)

J_PER_KWH = 3.6e6
DEFAULT_PUE = 1.0


@dataclass(frozen=True)
class GridIntensity:
    """The intensity a run's carbon is computed with, and where it came from."""

    gCO2_per_kWh: float
    source: str
    region: str | None = None
    zone: str | None = None
    location: str | None = None


def facility_J(device_J: float, pue: float) -> float:
    """What the facility drew for `device_J` at the devices: the data-centre overhead (cooling, power
    conversion) is `pue - 1` of it."""
    return device_J * pue


def grams_CO2e(device_J: float, pue: float, gCO2_per_kWh: float) -> float:
    """Carbon of `device_J` joules at the devices, in grams CO2e, with the facility's overhead counted."""
    return facility_J(device_J, pue) / J_PER_KWH * gCO2_per_kWh


def check_pue(pue: Any) -> float:
    if isinstance(pue, bool) or not isinstance(pue, int | float) or pue < 1.0:
        raise ConfigError(
            f"energy.pue must be a number >= 1.0 (facility energy / device energy), got {pue!r}. "
            "Use 1.0 to count the devices only; typical data centres are 1.1-1.6."
        )
    return float(pue)


def resolve_intensity(
    region: str | None,
    configured_gCO2_per_kWh: float,
    provider: ProviderSettings | None = None,
) -> GridIntensity:
    """The intensity for this run (see module doc). Never raises for a provider failure: it logs one
    line and falls back to the table, and the source says so."""
    if region is None:
        note = (
            " (energy.provider needs energy.region to name a zone)" if provider and provider.enabled else ""
        )
        return GridIntensity(float(configured_gCO2_per_kWh), f"configured (energy.grid_gCO2_per_kWh){note}")
    place = lookup_region(region)
    fallback = GridIntensity(place.table.gCO2_per_kWh, place.table_note, region, place.zone, place.location)
    if provider is None or not provider.enabled:
        return fallback
    client = make_provider(provider)
    try:
        value, at = client.latest(place.zone)
    except ProviderError as err:
        log.warning("Grid intensity: %s; using the offline table for %s", err, place.zone)
        return GridIntensity(
            fallback.gCO2_per_kWh, f"{fallback.source} ({client.name} failed: {err})", *_where(fallback)
        )
    return GridIntensity(
        value, f"live: {client.name} zone {place.zone} at {at}", region, place.zone, place.location
    )


def _where(g: GridIntensity) -> tuple[str | None, str | None, str | None]:
    return g.region, g.zone, g.location


def provider_settings(node: Mapping[str, Any] | DictConfig | None) -> ProviderSettings | None:
    """`energy.provider` (a dict node) as settings; None when absent."""
    if node is None:
        return None
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return ProviderSettings.from_mapping(data)  # type: ignore[arg-type]


def check_carbon_settings(cfg: DictConfig) -> None:
    """Config checks for validate_config: the region is in the tables, the PUE is possible."""
    region = OmegaConf.select(cfg, "energy.region")
    if region is not None:
        lookup_region(str(region))
    pue = OmegaConf.select(cfg, "energy.pue")
    if pue is not None:
        check_pue(pue)
    node = OmegaConf.select(cfg, "energy.provider")
    if node is not None:
        provider_settings(node)
