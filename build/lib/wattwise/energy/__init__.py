"""Energy measurement: the meter (Zeus or a labelled estimate) and the callback that owns it."""

from wattwise.energy.estimate import EstimateModel
from wattwise.energy.meter import EnergyMeter, EnergyReading
from wattwise.energy.monitor import EnergyMonitor, find_energy_monitor

__all__ = ["EnergyMeter", "EnergyMonitor", "EnergyReading", "EstimateModel", "find_energy_monitor"]
