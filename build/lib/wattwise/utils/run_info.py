"""Facts about the run for its summary: the command line, the device, versions."""

from __future__ import annotations

import logging
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


def command_line_keys() -> set[str]:
    """The config keys this run's command line set (`data.batch_size=8` -> `data.batch_size`)."""
    return {o.split("=", 1)[0].lstrip("+~") for o in hydra_overrides()}


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
