"""`callbacks.compile.*` as one frozen settings object: the keys, their defaults and their checks."""

from __future__ import annotations

from dataclasses import dataclass

from wattwise.methods.shared.settings import MethodSettings, integer, number, one_of, setting

KEY = "callbacks.compile"
MODES = ("auto", "default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class CompileSettings(MethodSettings):
    """compile's settings; see `Compile`'s Args for what each one means."""

    mode: str = setting("auto", one_of(*MODES), doc="torch.compile mode; auto: CUDA graphs where they fit")
    min_steps: int = setting(200, integer(low=0), doc="fewer training steps left: eager, nothing measured")
    start_step: int = setting(12, integer(low=0), doc="training steps of the fit before the trial starts")
    measure_steps: int = setting(8, integer(low=1), doc="measured steps each, eager then compiled")
    expected_compile_s: float = setting(20.0, number(low=0), doc="compile time assumed before paying it (s)")
    max_saving: float = setting(
        0.5, number(low=0, high=1, strict=True), doc="largest share of a step compiling is assumed to save"
    )
