"""The methods in your own training script: the callbacks in order, and the Trainer arguments they need.

    import lightning as L
    import wattwise

    callbacks, trainer_kwargs = wattwise.energy_callbacks(["prune", "early_stop"], early_stop={"window": 4})
    trainer = L.Trainer(max_epochs=20, callbacks=[*callbacks, *my_callbacks], **trainer_kwargs)
    trainer.fit(my_module, datamodule=my_data)
    print(wattwise.figures(trainer))   # energy, carbon and every method's figures, as summary.json has them

The energy monitor comes first (methods read what it closes at each epoch's end), the methods in
their hook order; each method gets the services it declared, exactly as `train.py` assembles a
run (methods/assemble.py). `FiguresToLoggers`, last, logs the same figures to the Trainer's
loggers at the end of the fit and of a test, so no wattwise script is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L

from wattwise.energy.monitor import EnergyMonitor
from wattwise.utils.errors import ConfigError


def _method_settings(option: str) -> dict[str, Any]:
    """The settings a method's config file gives it (its defaults as wattwise ships them).

    Values that point at train.yaml's run-wide keys (`${monitor}`, `${mode}`, `${seed}`) take
    train.yaml's defaults (`auto`, `auto`, 42), as in a `train.py` run; any other interpolation
    leaves the class's own default.
    """
    from omegaconf import OmegaConf

    from wattwise.config_dir import CONF_DIR
    from wattwise.methods.registry import method_infos

    run_wide = {
        k: v
        for k, v in OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml"), resolve=False).items()
        if isinstance(v, str | int | float | bool) and not (isinstance(v, str) and "${" in v)
    }
    node = OmegaConf.to_container(OmegaConf.load(method_infos()[option].config_file), resolve=False)
    out = {}
    for k, v in dict(node["callbacks"][option]).items():
        if k in ("_target_", "_recursive_"):
            continue
        if isinstance(v, str) and "${" in v:
            name = v.strip()[2:-1] if v.strip().startswith("${") and v.strip().endswith("}") else None
            if name not in run_wide:
                continue
            v = run_wide[name]
        out[k] = v
    return out


def build_method(option: str, **settings: Any) -> Any:
    """One registered method, built with its shipped settings overridden by `settings`."""
    from wattwise.methods.registry import method_classes, method_names

    if option not in method_names():
        raise ConfigError(f"{option!r} is not a wattwise method; choose from {method_names()}")
    return method_classes()[option](**{**_method_settings(option), **settings})


def energy_callbacks(
    options: Sequence[str],
    energy: Mapping[str, Any] | EnergyMonitor | None = None,
    trainer: Mapping[str, Any] | None = None,
    log_figures: bool = True,
    **settings: Mapping[str, Any],
) -> tuple[list[L.Callback], dict[str, Any]]:
    """The energy monitor and the methods named in `options` (a recipe such as "green" expands
    to its members), ordered, with the Trainer arguments they need.

    `settings[option]` overrides that method's shipped settings; `energy` the monitor's
    (`{"mode": "estimate"}`) or is a monitor you built; `trainer` is the Trainer arguments you
    will pass, so a method's needs are checked against them (amp's `precision`).
    """
    from wattwise.methods.assemble import assemble
    from wattwise.methods.registry import recipe_members, recipe_names

    names: list[str] = []
    recipe_settings: dict[str, dict[str, Any]] = {}
    for option in options:
        if option in recipe_names():
            for member in recipe_members(option):
                names.append(member)
                recipe_settings[member] = {"if_not_applicable": "skip", **_recipe_node(option, member)}
        else:
            names.append(option)
    unknown = set(settings) - set(names)
    if unknown:
        raise ConfigError(f"settings given for {sorted(unknown)}, which are not among the options {names}")
    methods = {
        n: build_method(n, **{**recipe_settings.get(n, {}), **dict(settings.get(n, {}))}) for n in names
    }
    monitor = energy if isinstance(energy, EnergyMonitor) else EnergyMonitor(**dict(energy or {}))
    trainer_cfg = dict(trainer or {})
    parts = assemble(methods, monitor, trainer_cfg, {f"trainer.{k}" for k in trainer_cfg})
    callbacks = [*parts.callbacks, *([FiguresToLoggers()] if log_figures else [])]
    return callbacks, dict(parts.trainer_settings)


def _recipe_node(recipe: str, member: str) -> dict[str, Any]:
    from wattwise.methods.registry import method_classes

    return dict(method_classes()[member].recipes.get(recipe, {}))


def figures(trainer: L.Trainer) -> dict[str, Any]:
    """The run's figures as summary.json holds them: the monitor's and every method's."""
    out: dict[str, Any] = {}
    for cb in trainer.callbacks:
        if hasattr(cb, "summary_figures"):
            out.update(cb.summary_figures())
    return out


def numeric(figures: Mapping[str, Any]) -> dict[str, float]:
    """The figures a logger's `log_metrics` takes: numbers (not bools), as floats."""
    return {k: float(v) for k, v in figures.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class FiguresToLoggers(L.Callback):
    """Logs `figures(trainer)` (numbers) to the Trainer's loggers at the end of a fit and of a test."""

    def _log(self, trainer: L.Trainer) -> None:
        numbers = numeric(figures(trainer))
        for logger in trainer.loggers:
            logger.log_metrics(numbers, step=trainer.global_step)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer)
