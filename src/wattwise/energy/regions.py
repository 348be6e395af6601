"""Grid carbon intensity by region, offline: the table shipped in `energy/data/`.

`energy.region` names where the electricity comes from: a country (ISO 3166 alpha-2 `DE` or alpha-3
`DEU`), an Electricity Maps grid zone (`US-MIDA-PJM`, `SE-SE3`: counted at its country's annual
average offline) or a cloud region (`eu-west-1`, `europe-west4`, `westeurope`). The figures are
annual averages (source and year in `data/grid_intensity.csv`); a live provider gives the hour's
figure (energy/carbon.py) and falls back to these.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

from wattwise.utils.errors import ConfigError

DATA_DIR = Path(__file__).with_name("data")
GRID_TABLE = DATA_DIR / "grid_intensity.csv"
CLOUD_TABLE = DATA_DIR / "cloud_regions.csv"
TABLE_SOURCE = "OWID energy-data carbon_intensity_elec"


@dataclass(frozen=True)
class CountryIntensity:
    iso2: str
    iso3: str
    country: str
    year: int
    gCO2_per_kWh: float


@dataclass(frozen=True)
class Region:
    """What `energy.region` resolved to: the zone a provider is asked about, and the table's figure."""

    name: str  # as the user gave it
    zone: str  # Electricity Maps zone key (country code, or country-operator)
    location: str  # for people and model cards: "Frankfurt, Germany"
    table: CountryIntensity  # the offline annual average used when no live figure is available

    @property
    def table_note(self) -> str:
        """Where the offline figure comes from, for the summary."""
        zone_note = "" if self.zone == self.table.iso2 else f", zone {self.zone} at its country's average"
        return f"table: {TABLE_SOURCE}, {self.table.country} {self.table.year}{zone_note}"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


@functools.cache
def country_table() -> dict[str, CountryIntensity]:
    """The shipped table, by alpha-2 and by alpha-3 code (upper case)."""
    out: dict[str, CountryIntensity] = {}
    for r in _rows(GRID_TABLE):
        c = CountryIntensity(r["iso2"], r["iso3"], r["country"], int(r["year"]), float(r["gCO2e_per_kWh"]))
        out[c.iso2] = out[c.iso3] = c
    return out


@functools.cache
def cloud_regions() -> dict[str, dict[str, str]]:
    """Cloud region name (lower case) -> its provider, zone and location."""
    return {r["region"].lower(): r for r in _rows(CLOUD_TABLE)}


def lookup_region(name: str) -> Region:
    """Resolve `energy.region`; a name the tables do not hold is a ConfigError naming the key."""
    key = str(name).strip()
    cloud = cloud_regions().get(key.lower())
    if cloud is not None:
        zone = cloud["zone"]
        table = country_table()[zone.split("-")[0]]
        return Region(key, zone, f"{cloud['location']} ({cloud['provider']} {cloud['region']})", table)
    code = key.upper()
    country = country_table().get(code) or country_table().get(code.split("-")[0])
    if country is None:
        raise ConfigError(
            f"energy.region={name!r} is not a country code (DE, DEU), a grid zone (US-MIDA-PJM) or a "
            f"known cloud region ({', '.join(sorted(cloud_regions()))}); set energy.grid_gCO2_per_kWh instead"
        )
    zone = country.iso2 if code in (country.iso2, country.iso3) else code
    location = country.country if zone == country.iso2 else f"{country.country} (grid zone {zone})"
    return Region(key, zone, location, country)
