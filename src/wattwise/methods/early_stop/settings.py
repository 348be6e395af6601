"""`callbacks.early_stop.*`: the keys of early stopping, their defaults and their checks, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wattwise.methods.shared.settings import MethodSettings, integer, number, one_of, setting, text
from wattwise.utils.errors import ConfigError

KEY = "callbacks.early_stop"


@dataclass(frozen=True)
class EarlyStopSettings(MethodSettings):
    """`callbacks.early_stop.*`: the keys, their defaults and their checks (see EarlyStop's Args)."""

    monitor: str = setting("val/acc", text())
    mode: str = setting("max", one_of("min", "max", "auto"))
    budget_J: float | None = setting(None, number(low=0, strict=True), optional=True)
    budget_kWh: float | None = setting(None, number(low=0, strict=True), optional=True)
    window: int = setting(8, integer(low=1))
    min_gain_fraction: float | None = setting(0.2, number(low=0), optional=True)
    min_gain_per_kJ: float | None = setting(None, number(low=0), optional=True)
    diminishing_patience: int = setting(4, integer(low=1))
    target: float | None = setting(None, number(), optional=True)
    patience: int | None = setting(None, integer(low=1), optional=True)
    min_delta: float = setting(0.0, number(low=0))
    tolerance: float | None = setting(None, number(low=0), optional=True)
    max_J_per_point: float | None = setting(None, number(low=0, strict=True), optional=True)
    point: float = setting(0.01, number(low=0, strict=True))
    confidence: float = setting(0.9, number(low=0.5, high=1, high_open=True))
    min_epochs: int = setting(8, integer(low=3))

    @classmethod
    def bad_combinations(cls) -> tuple[dict[str, Any], ...]:
        return ({"budget_J": 1000.0, "budget_kWh": 0.1},)

    def check(self, key: str) -> None:
        if self.budget_J is not None and self.budget_kWh is not None:
            raise ConfigError(
                f"{key}: set budget_J or budget_kWh, not both "
                f"(got {self.budget_J} J and {self.budget_kWh} kWh)"
            )
