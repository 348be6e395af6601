"""`callbacks.amp.*` as one frozen settings object: the keys, their defaults and their checks.

Built in the callback's constructor and by `auto_precision` (the Trainer's precision is chosen
before the callback exists), so a bad value fails in one line naming its key either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattwise.methods.amp.fp8 import RECIPES
from wattwise.methods.shared.settings import Check, MethodSettings, boolean, integer, one_of, setting
from wattwise.utils.errors import ConfigError

KEY = "callbacks.amp"
PRECISION_CHOICES = ("auto", "bf16-mixed", "16-mixed", "32-true")
FP8_CHOICES = ("auto", "off")

# Whole numbers of any sign pass here; `check` refuses the negative ones with its own wording
# ("must be >= 0, got -3"), which the config error has always used.
_WHOLE = Check(integer().ok, "an integer >= 0", integer(low=0).bad, int)


@dataclass(frozen=True)
class AmpSettings(MethodSettings):
    """amp's settings; see `Amp`'s Args for what each one means."""

    precision: str = setting("auto", one_of(*PRECISION_CHOICES), doc="auto or a Lightning precision")
    tf32: bool = setting(True, boolean(), doc="TF32 for fp32 matmuls on capability >= 8.0")
    channels_last: bool = setting(True, boolean(), doc="NHWC weights and inputs for conv nets")
    max_nonfinite_steps: int = setting(
        20, _WHOLE, doc="stop after this many NaN/inf losses in a row; 0: never"
    )
    measure_steps: int = setting(4, integer(low=0), doc="steps per candidate precision at fit start; 0: none")
    fp8: str = setting("auto", one_of(*FP8_CHOICES), doc="auto: try FP8 where the card has it; off")
    fp8_recipe: str = setting("tensorwise", one_of(*RECIPES), doc="torchao FP8 scaling recipe")

    def check(self, key: str) -> None:
        if self.max_nonfinite_steps < 0:
            raise ConfigError(f"{key}.max_nonfinite_steps must be >= 0, got {self.max_nonfinite_steps}")
