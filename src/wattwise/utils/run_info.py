"""Facts about the run for its summary: the chosen optim options, the device, versions."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


def hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


def optim_choices(overrides: list[str], callbacks: Iterable[str] = ()) -> list[str]:
    """The `optim` options of the run: as chosen on the command line (`+optim=a`, `optim=[a,b]`),
    else (an experiment config chose them) the callbacks named like an option in conf/optim/.

    Hydra's `runtime.choices` leaves out list-valued groups, so read the overrides.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    chosen: list[str] = []
    named = False
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~")
        if key != "optim":
            continue
        named = True
        value = parser.parse_override(text).value()
        chosen += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if named:
        return chosen
    from wattwise.config_dir import CONF_DIR

    options = {p.stem for p in (CONF_DIR / "optim").glob("*.yaml")}
    return [name for name in callbacks if name in options]


def device_description(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    text = str(device)
    if device.type == "cuda":
        text += f" ({torch.cuda.get_device_name(device)})"
    if trainer.world_size > 1:
        text += f" x{trainer.world_size} processes"
    return text


def versions() -> dict[str, Any]:
    import wattwise

    return {"wattwise": wattwise.__version__, "torch": torch.__version__, "lightning": L.__version__}
