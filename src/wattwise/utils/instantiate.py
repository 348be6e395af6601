"""Turning config nodes into objects: the datamodule, the net, the module, callbacks and loggers.

The data contract: a datamodule tells the net what it holds through attributes,
`input_shape` (one sample's shape: (C, H, W) images, (C, L) signals, (L,) token ids),
`num_classes`, and optionally `input_dtype` (default float32; token ids are int64). A net
whose constructor names `input_shape` or `num_classes` gets them filled in.

Plug-in by `_target_`: when a user's class replaces a bundled one
(`data._target_=mypkg.MyDataModule`), the bundled config's other keys (digits' `val_fraction`,
mlp's `hidden`, ...) were written for the bundled class, so they are left out and the user's
class keeps its own defaults; keys given on the command line are passed.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from wattwise.config_dir import CONF_DIR
from wattwise.utils.errors import ConfigError, root_cause

log = logging.getLogger(__name__)

CONTRACT_HINT = (
    "wattwise passes `input_shape` and `num_classes` (from the datamodule) to a net whose "
    "constructor names them"
)


# ---- `_target_` -------------------------------------------------------------------------------
# The methods' classes before each method got its own folder (wattwise.methods.<option>): a config
# that still names one fails in one line naming the new target.
MOVED_TARGETS = {
    "wattwise.optim.precision.AutoMixedPrecision": "wattwise.methods.amp.callback.Amp",
    "wattwise.optim.batch_size.BatchSizeFinder": "wattwise.methods.batch_size.callback.BatchSize",
    "wattwise.optim.carbon_aware.CarbonAwareStart": "wattwise.methods.carbon_aware.callback.CarbonAware",
    "wattwise.optim.data_cache.DataCache": "wattwise.methods.data_cache.callback.DataCache",
    "wattwise.optim.distill.Distillation": "wattwise.methods.distill.callback.Distill",
    "wattwise.optim.early_stop.EnergyAwareEarlyStopping": "wattwise.methods.early_stop.callback.EarlyStop",
    "wattwise.optim.power_limit.PowerLimitTuner": "wattwise.methods.power.callback.Power",
    "wattwise.optim.prune.StructuredPruning": "wattwise.methods.prune.callback.Prune",
    "wattwise.optim.quantize.QuantizationAwareTraining": "wattwise.methods.qat.callback.Qat",
}


def locate(key: str, node: DictConfig) -> Callable[..., Any]:
    """The class or function a node's `_target_` names, or one line naming the key."""
    from hydra.utils import get_method

    target = node.get("_target_")
    if not target:
        raise ConfigError(f"{key}._target_ is missing: set it to a class, e.g. {key}._target_=mypkg.MyClass")
    if str(target) in MOVED_TARGETS:
        new = MOVED_TARGETS[str(target)]
        raise ConfigError(f"{key}._target_={target} has moved: use {key}._target_={new}")
    try:
        return get_method(str(target))
    except Exception as err:  # noqa: BLE001 - Hydra wraps the ImportError/AttributeError
        cause = root_cause(err)
        raise ConfigError(
            f"{key}._target_={target} cannot be imported ({type(cause).__name__}: {cause}). Check the "
            "spelling, and that its package is importable here (installed, or on PYTHONPATH)."
        ) from None


def _accepts(target: Callable[..., Any]) -> tuple[set[str], bool]:
    """(named parameters, whether it takes **kwargs) of a class's constructor or a function."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return set(), True
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params.values())


def build_at(key: str, node: DictConfig, **extra: Any) -> Any:
    """`instantiate(node)`, where a wrong argument for the target names the key and the signature.

    Errors raised inside the constructor keep their traceback (a bug in a user's class must show
    its cause); only a ConfigError, or a call that does not match the signature, is one line.
    """
    target = locate(key, node)
    names, var_kw = _accepts(target)
    given = {str(k) for k in node if k not in ("_target_", "_partial_", "_recursive_", "_convert_")}
    unknown = sorted((given | set(extra)) - names) if not var_kw else []
    if unknown:
        raise ConfigError(
            f"{key}: {node._target_} takes no argument(s) {unknown}; it takes {sorted(names) or 'none'}. "
            f"Remove them (~{key}.{unknown[0]}) or rename them."
        )
    try:
        return instantiate(node, **extra)
    except Exception as err:
        cause = root_cause(err)
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, TypeError) and "required positional argument" in str(cause):
            raise ConfigError(f"{key}: {cause}. Set it in the config ({key}.<name>=...).") from None
        raise


# ---- the plug-in path ---------------------------------------------------------------------------
def _group_file(group: str, name: str) -> DictConfig | None:
    """A config file of `group` with the same-group files its defaults list names merged in."""
    file = CONF_DIR / group / f"{name}.yaml"
    if not file.exists():
        return None
    node = OmegaConf.load(file)
    parents = [d for d in node.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
    loaded = [p for p in (_group_file(group, d) for d in parents) if p is not None]
    return OmegaConf.merge(*loaded, node) if loaded else node


def _bundled(group: str, path: str | None = None) -> DictConfig | None:
    """The bundled config of `group` this run started from (e.g. conf/data/digits.yaml)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get(group)
    except (ImportError, ValueError):
        return None
    node = _group_file(group, str(choice)) if choice else None
    if node is None:
        return None
    return OmegaConf.select(node, path) if path else node


def plugin_node(key: str, node: DictConfig, bundled: DictConfig | None) -> DictConfig:
    """`node` as the user's class should receive it (see the module docstring)."""
    if (
        bundled is None
        or not isinstance(bundled, DictConfig)
        or bundled.get("_target_") == node.get("_target_")
    ):
        return node
    from wattwise.utils.run_info import command_line_keys

    given = command_line_keys()
    values = OmegaConf.to_container(node, resolve=True)  # resolve while the node has its parents
    keep = {k: v for k, v in values.items() if k == "_target_" or f"{key}.{k}" in given or k not in bundled}
    dropped = [k for k in values if k not in keep]
    if dropped:
        log.info(
            "%s: %s replaces the bundled %s; its keys %s were written for that class and are left out "
            "(pass any of them as %s.<key>=... to set it)",
            key,
            node._target_,
            bundled._target_,
            ", ".join(dropped),
            key,
        )
    return OmegaConf.create(keep)


# ---- data, net, module --------------------------------------------------------------------------
def build_datamodule(data_cfg: DictConfig) -> L.LightningDataModule:
    return build_at("data", plugin_node("data", data_cfg, _bundled("data")))


def data_facts(datamodule: Any, model_cfg: DictConfig) -> dict[str, Any]:
    """`input_shape`, `num_classes`, `input_dtype` from the datamodule, `model.num_classes` winning."""
    name = type(datamodule).__name__
    num_classes = model_cfg.get("num_classes") or getattr(datamodule, "num_classes", None)
    return {
        "input_shape": getattr(datamodule, "input_shape", None),
        "num_classes": num_classes,
        "input_dtype": getattr(datamodule, "input_dtype", torch.float32),
        "_name": name,
    }


def build_net(net_cfg: DictConfig, facts: dict[str, Any]) -> torch.nn.Module:
    node = plugin_node("model.net", net_cfg, _bundled("model", "net"))
    target = locate("model.net", node)
    names, _ = _accepts(target)
    extra: dict[str, Any] = {}
    for k in ("input_shape", "num_classes"):
        if k in names and k not in node:
            if facts[k] is None:
                fix = (
                    f"give {facts['_name']} a `num_classes` attribute, or set model.num_classes=<n>"
                    if k == "num_classes"
                    else f"give {facts['_name']} an `input_shape` attribute (one sample's shape), "
                    f"or set model.net.input_shape=[...]"
                )
                raise ConfigError(
                    f"model.net: {node._target_} needs `{k}` but {facts['_name']} has none: {fix}"
                )
            extra[k] = list(facts[k]) if k == "input_shape" else facts[k]
    try:
        return build_at("model.net", node, **extra)
    except ConfigError as err:
        if "required positional argument" in str(err) or "takes no argument" in str(err):
            raise ConfigError(
                f"{err} ({CONTRACT_HINT}; other arguments come from model.net.<name>=...)"
            ) from None
        raise


def build_module(model_cfg: DictConfig, datamodule: L.LightningDataModule) -> L.LightningModule:
    """The LightningModule, its net built first (so the net sees the data's shape).

    Any LightningModule works by `model._target_`: one in the lightning-hydra-template convention
    (`__init__(net, optimizer, scheduler)`) gets the net, optimizer and scheduler partials; one that
    builds its own net gets no `net`. Bundled keys the class does not take are left out (one info
    line); a key set on the command line is always passed, so a wrong one fails in one line.
    """
    facts = data_facts(datamodule, model_cfg)
    target = locate("model", model_cfg)
    names, any_kwargs = _accepts(target)
    given = _command_line_keys()
    resolved = OmegaConf.to_container(model_cfg, resolve=True)  # resolve while the parents are still there
    resolved.pop("net", None)
    extra: dict[str, Any] = {}
    if "net" in names or (any_kwargs and "net" in model_cfg):
        if model_cfg.get("net") is None:
            raise ConfigError(
                f"model: {model_cfg._target_} takes a `net`: set model.net._target_=<your net class>"
            )
        extra["net"] = build_net(model_cfg.net, facts)
    dropped = [
        k
        for k in resolved
        if k != "_target_" and not any_kwargs and k not in names and f"model.{k}" not in given
    ]
    if dropped:
        log.info("model: %s takes no %s (bundled keys, left out)", model_cfg._target_, ", ".join(dropped))
    module_cfg = OmegaConf.create({k: v for k, v in resolved.items() if k not in dropped})
    if "num_classes" in names and "num_classes" not in model_cfg:
        if facts["num_classes"] is None:
            raise ConfigError(
                f"model: {facts['_name']} has no `num_classes` attribute: "
                "give it one, or set model.num_classes=<n>"
            )
        extra["num_classes"] = facts["num_classes"]
    module = build_at("model", module_cfg, **extra)
    check_optimizer(module)
    return module


def _command_line_keys() -> set[str]:
    from wattwise.utils.run_info import command_line_keys

    return set(command_line_keys())


def check_optimizer(module: Any) -> None:
    """Build the optimizer and scheduler on a dummy parameter: bad settings fail now, in one line."""
    factory = getattr(module, "optimizer_factory", None)
    if factory is None:
        return
    try:
        optimizer = factory(params=[torch.nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.optimizer: {err}") from None
    scheduler = getattr(module, "scheduler_factory", None)
    if scheduler is not None:
        try:
            scheduler(optimizer=optimizer)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model.scheduler: {err}") from None


def build_dict(node: DictConfig | None, key: str) -> dict[str, Any]:
    """Instantiate every `_target_` entry of a dict node (callbacks, loggers); null entries are skipped."""
    out: dict[str, Any] = {}
    if not node:
        return out
    for name, value in node.items():
        if isinstance(value, DictConfig) and "_target_" in value:
            out[str(name)] = build_at(f"{key}.{name}", value)
    return out
