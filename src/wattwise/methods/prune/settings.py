"""`callbacks.prune.*`: the keys, their defaults and their checks, in one place.

The one-line errors keep the wording the prune method always had (e.g. "callbacks.prune.ratio
must be in [0, 1), got 1.2"), so some checks are spelled out here instead of the shared
validators' generic "a number >= 0 and < 1".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wattwise.methods.prune.schedule import SCHEDULES
from wattwise.methods.shared.settings import Check, MethodSettings, boolean, integer, number, setting
from wattwise.utils.errors import ConfigError

IMPORTANCES = ("magnitude", "taylor", "bn_scale")


def _choice(choices: Sequence[str]) -> Check:
    """One of `choices`, named as a Python list in the message (`one of ['cubic', 'linear']`)."""
    return Check(lambda v: v in choices, f"one of {list(choices)}", ("no-such-choice", 7))


def _like(base: Check, expects: str) -> Check:
    """`base`'s test and conversion under this method's own wording."""
    return Check(base.ok, expects, base.bad, base.convert)


def _input_shape_ok(value: Any) -> bool:
    if isinstance(value, str | bytes):
        return False
    try:
        return all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    except TypeError:  # not a sequence at all
        return False


@dataclass(frozen=True)
class PruneSettings(MethodSettings):
    """What `Prune` takes; see each field's doc (the card, README.md, has the full table)."""

    ratio: float | None = setting(
        0.5, doc="final fraction of channels removed from each prunable layer, in [0, 1)"
    )
    macs_reduction: float | None = setting(
        None,
        _like(number(low=1, strict=True), "> 1 (base MACs / final MACs)"),
        optional=True,
        doc="instead of ratio, a target base_MACs / final_MACs; the ratio is found at fit start",
    )
    start_epoch: int = setting(1, integer(low=0), doc="first epoch (0-based) at whose start a prune happens")
    end_epoch: int = setting(4, doc="last such epoch; one prune per epoch in between")
    schedule: str = setting("cubic", _choice(SCHEDULES), doc="cubic (Zhu & Gupta 2017) or linear")
    importance: str = setting(
        "magnitude", _choice(IMPORTANCES), doc="magnitude (L2), taylor (|w * grad|) or bn_scale (|gamma|)"
    )
    global_pruning: bool = setting(False, boolean(), doc="rank channels across layers, not per layer")
    round_to: int | None = setting(
        8,
        _like(integer(low=1), "a positive integer or null"),
        optional=True,
        doc="keep channel counts multiples of this (null: no rounding)",
    )
    max_layer_ratio: float = setting(
        0.9,
        _like(number(low=0, strict=True, high=1, high_open=True), "in (0, 1)"),
        doc="no layer loses more than this fraction (matters with global pruning)",
    )
    ignored_layers: Sequence[str] = setting((), doc="net submodules to leave alone (the head always is)")
    reset_best_after_prune: bool = setting(
        True, boolean(), doc="restart checkpoint and early-stopping best tracking after each prune"
    )
    export_dir: str | None = setting(None, doc="where pruned_net.pt(2) go at fit end (null: no export)")
    export_program: bool = setting(True, boolean(), doc="also write a torch.export program")
    input_shape: Sequence[int] | None = setting(
        None,
        Check(_input_shape_ok, "a list of positive integers or null", ("x", (0, 8)), tuple),
        optional=True,
        doc="one sample's shape, to trace with float noise instead of real samples",
    )
    min_base_macs: float | None = setting(
        None,
        _like(number(low=0), ">= 0 or null"),
        optional=True,
        doc="nets with fewer MACs per sample than this do not apply (null: always prune)",
    )

    def check(self, key: str) -> None:
        """The rules between keys: ratio only counts without macs_reduction; the epoch range."""
        if self.macs_reduction is None and not _in_unit_interval(self.ratio):
            raise ConfigError(f"{key}.ratio must be in [0, 1), got {self.ratio}")
        end = self.end_epoch
        if isinstance(end, bool) or not isinstance(end, int) or end < self.start_epoch:
            raise ConfigError(
                f"{key}.end_epoch must be an integer >= {key}.start_epoch ({self.start_epoch}), got {end}"
            )
        if self.importance == "taylor" and self.start_epoch < 1:
            raise ConfigError(
                f"{key}.start_epoch must be >= 1 with importance=taylor (gradients are gathered in the "
                f"epoch before a prune), got {self.start_epoch}"
            )

    @property
    def channel_ratio(self) -> float | None:
        """The final channel ratio asked for; None when it is to be found from macs_reduction."""
        return None if self.macs_reduction is not None else float(self.ratio)  # type: ignore[arg-type]

    @property
    def n_steps(self) -> int:
        """How many prunes the schedule makes: one per epoch from start_epoch to end_epoch."""
        return self.end_epoch - self.start_epoch + 1


def _in_unit_interval(value: Any) -> bool:
    return number(low=0, high=1, high_open=True).ok(value)
