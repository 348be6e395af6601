"""A method's settings as one frozen dataclass, validated in one place with shared validators.

Each method declares its config keys once:

    @dataclass(frozen=True)
    class EarlyStopSettings(MethodSettings):
        window: int = setting(8, integer(low=1))
        budget_J: float | None = setting(None, number(low=0, strict=True), optional=True)

        def check(self, key: str) -> None:            # combinations, after every field passed
            if self.budget_J is not None and self.budget_kWh is not None: ...

and builds them in its constructor with `EarlyStopSettings.build("callbacks.early_stop", **kw)`.
The keys, their defaults and their one-line errors ("callbacks.early_stop.window must be an
integer >= 1, got 0") come from that one definition; the generated bad-input tests read it too
(`bad_values()`, and `bad_combinations()` for the rules between keys).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from wattwise.utils.errors import ConfigError

S = TypeVar("S", bound="MethodSettings")


@dataclass(frozen=True)
class Check:
    """One validator: `ok(value)`, what it expects (for the message) and values it must refuse."""

    ok: Callable[[Any], bool]
    expects: str
    bad: tuple[Any, ...] = ()
    convert: Callable[[Any], Any] = lambda v: v


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(
    low: float | None = None, high: float | None = None, strict: bool = False, high_open: bool = False
) -> Check:
    """A finite number (bools refused) >= low (> low when strict) and <= high (< high when high_open)."""

    def ok(v: Any) -> bool:
        if not _finite(v):
            return False
        if low is not None and not (v > low if strict else v >= low):
            return False
        return high is None or (v < high if high_open else v <= high)

    expects = "a number" + _bounds(low, high, strict, high_open)
    bad = (
        "x",
        True,
        math.nan,
        *([low - 1] if low is not None else []),
        *([high + 1] if high is not None else []),
    )
    return Check(ok, expects, bad, float)


def integer(low: int | None = None, high: int | None = None) -> Check:
    """A whole number (bools refused; 3.0 accepted as 3) in [low, high]."""

    def ok(v: Any) -> bool:
        return (
            _finite(v) and float(v).is_integer() and (low is None or v >= low) and (high is None or v <= high)
        )

    bad = ("x", True, 1.5, *([low - 1] if low is not None else []), *([high + 1] if high is not None else []))
    return Check(ok, "an integer" + _bounds(low, high, False, False), bad, int)


def one_of(*choices: Any) -> Check:
    names = [str(c) for c in choices]
    expects = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
    return Check(lambda v: v in choices, expects, ("no-such-choice", 7))


def boolean() -> Check:
    return Check(lambda v: isinstance(v, bool), "true or false", ("maybe", 2))


def text(nonempty: bool = True) -> Check:
    return Check(lambda v: isinstance(v, str) and (bool(v) or not nonempty), "a non-empty string", ("", 3))


def _bounds(low: float | None, high: float | None, strict: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if strict else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return (" " + " and ".join(parts)) if parts else ""


def setting(default: Any, check: Check | None = None, optional: bool = False, doc: str = "") -> Any:
    """A settings field: its default, its validator, whether null is allowed, a short doc."""
    return field(default=default, metadata={"check": check, "optional": optional, "doc": doc})


@dataclass(frozen=True)
class MethodSettings:
    """Base of every method's settings: `build` validates each field, then `check` the combinations."""

    @classmethod
    def build(cls: type[S], key: str, **values: Any) -> S:
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"{key} has no setting(s) {sorted(unknown)}")
        converted = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            converted[f.name] = validate(key, f, values[f.name])
        settings = cls(**converted)
        settings.check(key)
        return settings

    def check(self, key: str) -> None:
        """Rules between settings (override); each raises ConfigError naming the keys."""

    @classmethod
    def bad_combinations(cls) -> tuple[dict[str, Any], ...]:
        """Settings that each pass alone but that `check` must refuse together (override where a
        method has such rules); the generated bad-input tests read them beside `bad_values()`."""
        return ()

    @classmethod
    def bad_values(cls) -> dict[str, tuple[Any, ...]]:
        """For each checked setting, values it must refuse (the generated bad-input tests use them)."""
        out = {}
        for f in dataclasses.fields(cls):
            check = f.metadata.get("check")
            if check is not None and check.bad:
                out[f.name] = check.bad
        return out


def validate(key: str, f: dataclasses.Field, value: Any) -> Any:
    """The value converted, or ConfigError `<key>.<name> must be <expects>, got <value>`."""
    check: Check | None = f.metadata.get("check")
    if value is None and f.metadata.get("optional"):
        return None
    if check is None:
        return value
    if not check.ok(value):
        raise ConfigError(f"{key}.{f.name} must be {check.expects}, got {value!r}")
    return check.convert(value)


def describe(cls: type[MethodSettings]) -> Sequence[tuple[str, Any, str]]:
    """(name, default, doc) of each setting, for cards and `--help`-style listings."""
    return [(f.name, f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]
