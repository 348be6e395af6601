"""Generated bad-input tests: every registered method refuses each bad value its settings declare.

Convention (how a method's settings are found): the module that defines the method class (its
`callback.py`) has a module-level name `<ClassName>Settings`, a subclass of
`wattwise.methods.shared.settings.MethodSettings`, defined there or imported there from a module
beside it (`EarlyStop` -> `EarlyStopSettings`, `DataCache` -> `DataCacheSettings`). The constructor
takes the settings' fields as keyword arguments (plus `if_not_applicable`) and builds them with
`<ClassName>Settings.build("callbacks.<name>", ...)`.

For each field in `Settings.bad_values()` (the values its validator must refuse), constructing the
method with that one value must raise `ConfigError` in one line naming `callbacks.<name>.<field>`.
Every registered method must have one (a method without is a failure, not a skip), so a new
method's bad-input tests exist the moment it is registered.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from typing import Any

import pytest

from wattwise.methods.registry import method_classes
from wattwise.methods.shared.settings import MethodSettings
from wattwise.utils.errors import ConfigError

# Constructor parameters that are not config keys: objects a test or a script hands in.
INJECTED = {"batch_size": {"measure"}}  # a stand-in for the meter's step measurement


def settings_class(cls: type) -> type[MethodSettings] | None:
    """`<ClassName>Settings` from the module that defines the method class, or None."""
    found = getattr(sys.modules[cls.__module__], f"{cls.__name__}Settings", None)
    if isinstance(found, type) and issubclass(found, MethodSettings):
        return found
    return None


def _cases() -> list[Any]:
    cases = []
    for name, cls in sorted(method_classes().items()):
        settings = settings_class(cls)
        if settings is None:
            cases.append(pytest.param(name, None, None, id=f"{name}-not-converted"))
            continue
        for field, values in settings.bad_values().items():
            for value in values:
                cases.append(pytest.param(name, field, value, id=f"{name}.{field}={value!r}"))
    return cases


def _settings_of(name: str) -> type[MethodSettings]:
    cls = method_classes()[name]
    settings = settings_class(cls)
    assert settings is not None, f"{cls.__module__} has no {cls.__name__}Settings (see module doc)"
    return settings


@pytest.mark.parametrize(("name", "field", "value"), _cases())
def test_a_bad_value_fails_in_one_line_naming_its_key(name: str, field: str | None, value: Any) -> None:
    _settings_of(name)
    with pytest.raises(ConfigError) as err:
        method_classes()[name](**{field: value})
    message = str(err.value)
    assert f"callbacks.{name}.{field}" in message, message
    assert "\n" not in message, message


@pytest.mark.parametrize("name", sorted(method_classes()))
def test_the_constructor_takes_each_setting_with_its_default(name: str) -> None:
    """One definition of the defaults: the constructor's keyword defaults are the settings' own."""
    settings = _settings_of(name)
    params = inspect.signature(method_classes()[name].__init__).parameters
    for f in dataclasses.fields(settings):
        assert f.name in params, f"{name}: the constructor takes no {f.name}"
        assert params[f.name].default == f.default, (name, f.name, params[f.name].default, f.default)
    expected = {f.name for f in dataclasses.fields(settings)} | {"if_not_applicable"}
    expected |= INJECTED.get(name, set())
    assert set(params) - {"self"} == expected


def test_every_registered_method_has_its_settings_class() -> None:
    classes = method_classes()
    assert len(classes) >= 9
    assert all(settings_class(cls) is not None for cls in classes.values())
