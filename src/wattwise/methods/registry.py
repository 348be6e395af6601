"""The registry of energy methods: the one list everything else reads.

A method is registered by its config file: `conf/optim/<name>.yaml` holding the node
`callbacks.<name>` whose `_target_` is an `EnergyMethod` subclass with `name = "<name>"`.
Nothing else needs editing when a method is added (see docs/adding_a_method.md):

- recipes (`+optim=green`) are built here from the classes' `recipes` attribute and stored in
  Hydra's ConfigStore, so `green` always holds every method that joins it;
- `ordered()` puts the built methods in the order their hooks run (`runs_after`);
- `run_label()` names a run's methods the same way in summary.json, compare and W&B;
- `sweep_choices()` and the `wattwise_optim_search_space` resolver give `make sweep` and the
  Optuna search space their option sets (the methods `in_comparisons`);
- the final table asks each class for its `report_rows`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wattwise.config_dir import CONF_DIR

OPTIM_DIR = CONF_DIR / "optim"
RECIPE_KEY = "recipe"  # top-level config key a recipe sets, e.g. recipe: green


@dataclass(frozen=True)
class MethodInfo:
    """A registered method as its config file declares it (no import needed)."""

    name: str
    target: str
    config_file: Path

    def load_class(self) -> type:
        from wattwise.methods.base import EnergyMethod

        module_name, _, attr = self.target.rpartition(".")
        cls = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(cls, type) and issubclass(cls, EnergyMethod)):
            raise TypeError(
                f"{self.config_file}: callbacks.{self.name}._target_={self.target} is not an EnergyMethod"
            )
        if cls.name != self.name:
            raise TypeError(
                f"{self.config_file}: {self.target}.name is {cls.name!r}; "
                f"it must be {self.name!r} (the file's name)"
            )
        return cls


@functools.cache
def method_infos() -> dict[str, MethodInfo]:
    """Every registered method, by name, in alphabetical order."""
    out: dict[str, MethodInfo] = {}
    for path in sorted(OPTIM_DIR.glob("*.yaml")):
        node = OmegaConf.load(path)
        target = OmegaConf.select(node, f"callbacks.{path.stem}._target_")
        if target is None:
            raise TypeError(f"{path}: a method config must define callbacks.{path.stem}._target_")
        out[path.stem] = MethodInfo(path.stem, str(target), path)
    return out


@functools.cache
def method_classes() -> dict[str, type]:
    return {name: info.load_class() for name, info in method_infos().items()}


def method_names() -> list[str]:
    return list(method_infos())


def compared_method_names() -> list[str]:
    """The methods sweeps, the search and the benchmark compare (`in_comparisons`; see methods/base.py)."""
    return [name for name, cls in method_classes().items() if cls.in_comparisons]


def recipe_names() -> list[str]:
    return sorted({r for cls in method_classes().values() for r in cls.recipes})


def recipe_members(recipe: str) -> list[str]:
    return [name for name, cls in method_classes().items() if recipe in cls.recipes]


def recipe_node(recipe: str) -> dict[str, Any]:
    """The config a recipe stands for: its members' configs, each set to step aside where it
    does not apply, plus the settings each member takes in this recipe."""
    members = recipe_members(recipe)
    callbacks = {
        name: {"if_not_applicable": "skip", **dict(method_classes()[name].recipes[recipe])}
        for name in members
    }
    return {"defaults": [*members, "_self_"], RECIPE_KEY: recipe, "callbacks": callbacks}


def register_recipes() -> None:
    """Store every recipe as an `optim` option (`+optim=green`) in Hydra's ConfigStore; idempotent."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for recipe in recipe_names():
        if (OPTIM_DIR / f"{recipe}.yaml").exists():
            raise TypeError(
                f"{OPTIM_DIR / recipe}.yaml: `{recipe}` is a recipe; it is built from the registry"
            )
        cs.store(group="optim", name=recipe, node=recipe_node(recipe), package="_global_")
    if not OmegaConf.has_resolver("wattwise_optim_search_space"):
        OmegaConf.register_new_resolver("wattwise_optim_search_space", optim_search_space)


def option_names() -> list[str]:
    """Everything `optim=` accepts: the methods and the recipes."""
    return [*method_names(), *recipe_names()]


# ---- a run's methods ---------------------------------------------------------------------------
def configured_methods(cfg: DictConfig | Mapping[str, Any]) -> list[str]:
    """Names of the registered methods a composed config switches on, in registry order."""
    callbacks = cfg.get("callbacks") or {}
    return [
        n for n in method_names() if isinstance(callbacks.get(n), Mapping | DictConfig) and callbacks.get(n)
    ]


def run_label(cfg: DictConfig | Mapping[str, Any]) -> list[str]:
    """The run's methods as people name them: the recipe, then any method beyond it, else the methods.

    `+optim=green`, `optim=[green]` and `experiment=cnn_digits_green` are all `["green"]`;
    `'+optim=[prune,amp]'` and `'+optim=[amp,prune]'` are both `["amp", "prune"]`.
    """
    methods = configured_methods(cfg)
    recipe = cfg.get(RECIPE_KEY)
    if not recipe:
        return methods
    members = set(recipe_members(str(recipe)))
    return [str(recipe), *(m for m in methods if m not in members)]


def ordered(methods: Iterable[Any]) -> list[Any]:
    """Methods in hook order: registry order, each after the methods its `runs_after` names."""
    pending = sorted(
        methods, key=lambda m: method_names().index(m.name) if m.name in method_infos() else 1 << 30
    )
    present = {m.name for m in pending}
    done: list[Any] = []
    placed: set[str] = set()
    while pending:
        for m in pending:
            if all(dep in placed or dep not in present for dep in m.runs_after):
                done.append(m)
                placed.add(m.name)
                pending.remove(m)
                break
        else:
            cycle = ", ".join(f"{m.name} after {list(m.runs_after)}" for m in pending)
            raise TypeError(f"energy methods' runs_after form a cycle: {cycle}")
    return done


# ---- sweeps ----------------------------------------------------------------------------------
def sweep_choices() -> list[str]:
    """`optim` values of the standard sweep: the baseline, each method alone, each recipe."""
    return ["[]", *(f"[{n}]" for n in compared_method_names()), *(f"[{r}]" for r in recipe_names())]


def search_choices() -> list[str]:
    """`optim` values of the Optuna search: the sweep's sets plus every pair of methods."""
    names = compared_method_names()
    pairs = [f"[{a},{b}]" for i, a in enumerate(names) for b in names[i + 1 :]]
    return [*sweep_choices()[: 1 + len(names)], *pairs, *(f"[{r}]" for r in recipe_names())]


def optim_search_space(*_: Any) -> str:
    """Optuna's categorical over `search_choices()` (`hparams_search=energy_pareto` reads it)."""
    return "choice(" + ", ".join(search_choices()) + ")"


if __name__ == "__main__":  # `python -m wattwise.methods.registry --sweep`: the standard sweep's optim list
    import sys

    if sys.argv[1:] == ["--sweep"]:
        print(",".join(sweep_choices()))
    else:
        for name, cls in method_classes().items():
            print(f"{name:12s} {cls.__module__}.{cls.__qualname__}  recipes: {sorted(cls.recipes) or '-'}")
