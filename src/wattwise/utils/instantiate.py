"""Turning config nodes into objects: the datamodule, the net, callbacks and loggers.

Nets get `input_shape` and `num_classes` from the datamodule when their signature
asks for them and the config does not set them, so a user net plugs in by
`_target_` alone.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from wattwise.utils.errors import ConfigError


def build_net(net_cfg: DictConfig, datamodule: L.LightningDataModule) -> Any:
    target = get_method(net_cfg._target_)
    params = inspect.signature(target).parameters
    extra: dict[str, Any] = {}
    for key in ("input_shape", "num_classes"):
        if key in params and key not in net_cfg:
            value = getattr(datamodule, key, None)
            if value is None:
                raise ConfigError(
                    f"{type(datamodule).__name__} has no `{key}` attribute; set model.net.{key} in the config"
                )
            extra[key] = value
    return instantiate(net_cfg, **extra)


def build_module(model_cfg: DictConfig, datamodule: L.LightningDataModule) -> L.LightningModule:
    """The LightningModule with its net built first (so the net sees the data's shape)."""
    net = build_net(model_cfg.net, datamodule)
    resolved = OmegaConf.to_container(model_cfg, resolve=True)  # resolve while the parents are still there
    resolved.pop("net")
    module_cfg = OmegaConf.create(resolved)
    extra: dict[str, Any] = {"net": net}
    target = get_method(model_cfg._target_)
    if "num_classes" in inspect.signature(target).parameters and "num_classes" not in model_cfg:
        extra["num_classes"] = datamodule.num_classes
    return instantiate(module_cfg, **extra)


def build_dict(node: DictConfig | None) -> dict[str, Any]:
    """Instantiate every `_target_` entry of a dict node (callbacks, loggers); null entries are skipped."""
    out: dict[str, Any] = {}
    if not node:
        return out
    for key, value in node.items():
        if isinstance(value, DictConfig) and "_target_" in value:
            out[str(key)] = instantiate(value)
    return out
