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


# ---- the same bad values through the config, and the rules between keys --------------------------
def _as_override(value: Any) -> str:
    """A value as a command-line override writes it (true, nan, [1, 2], 'x')."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    return str(list(value) if isinstance(value, tuple) else value).replace("'", "")


def _config_cases() -> list[Any]:
    """(method, {key: bad value, ...}): each bad value alone, then each forbidden combination."""
    cases = []
    for name in sorted(method_classes()):
        settings = _settings_of(name)
        for field, values in settings.bad_values().items():
            for value in values:
                cases.append(pytest.param(name, {field: value}, id=f"{name}.{field}={value!r}"))
        for combo in settings.bad_combinations():
            cases.append(pytest.param(name, combo, id=f"{name}:{'+'.join(combo)}"))
    return cases


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> Any:
    """`+optim=<name>` composed once per method: the callbacks node the CLI builds from."""
    from conftest import compose_cfg
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    found: dict[str, Any] = {}

    def node(name: str) -> Any:
        if name not in found:
            cfg = compose_cfg(tmp_path_factory.mktemp(name), [f"+optim={name}"])
            found[name] = OmegaConf.to_container(cfg.callbacks[name], resolve=True)
            GlobalHydra.instance().clear()
        return found[name]

    return node


@pytest.mark.parametrize(("name", "values"), _config_cases())
def test_a_bad_setting_in_the_config_fails_in_one_line_naming_its_key(composed, name, values) -> None:
    """The config path the CLI takes (`callbacks.<name>.<key>=...` -> the constructor): one line."""
    from omegaconf import OmegaConf, open_dict

    from wattwise.utils.instantiate import build_dict

    node = OmegaConf.create(composed(name))
    with open_dict(node):
        for field, value in values.items():
            node[field] = list(value) if isinstance(value, tuple) else value
    with pytest.raises(ConfigError) as err:
        build_dict(OmegaConf.create({name: node}), "callbacks")
    message = str(err.value)
    assert f"callbacks.{name}" in message and "\n" not in message, message
    assert any(field in message for field in values), message


@pytest.mark.parametrize("name", sorted(method_classes()))
def test_a_bad_setting_stops_the_run_before_anything_is_written(tmp_path, name) -> None:
    """End to end for each method (its first bad value, and its first forbidden combination): the
    run raises the one-line ConfigError before training; its run dir holds no summary or checkpoint."""
    from conftest import compose_cfg
    from hydra.core.global_hydra import GlobalHydra

    from wattwise.train import train

    settings = _settings_of(name)
    field, values = next(iter(settings.bad_values().items()))
    tries = [{field: values[0]}, *settings.bad_combinations()[:1]]
    for i, bad in enumerate(tries):
        overrides = [f"+optim={name}", *(f"callbacks.{name}.{k}={_as_override(v)}" for k, v in bad.items())]
        cfg = compose_cfg(tmp_path / str(i), overrides)
        try:
            with pytest.raises(ConfigError) as err:
                train(cfg)
        finally:
            GlobalHydra.instance().clear()
        assert f"callbacks.{name}" in str(err.value) and "\n" not in str(err.value), str(err.value)
        run_dir = tmp_path / str(i) / "run"
        written = sorted(p.name for p in run_dir.rglob("*")) if run_dir.exists() else []
        assert not {"summary.json", "last.ckpt", "metrics.csv"} & set(written), written
