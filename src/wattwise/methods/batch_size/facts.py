"""What the finder reads from the run before it measures: the train set, the device, the card.

Kept apart from the callback so that the callback only gathers these facts and acts on a decision;
each function answers one question and returns None where the run cannot say.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import torch

from wattwise.methods.batch_size import cache
from wattwise.methods.batch_size.settings import BatchSizeSettings
from wattwise.methods.shared.profile_cache import net_signature


def dataset_len(loader: Any) -> int | None:
    """Train samples in the loader's dataset (None where it has no length: an iterable dataset)."""
    try:
        return len(loader.dataset)
    except (TypeError, AttributeError):
        return None


def input_shape(loader: Any) -> list[int] | None:
    """One sample's input shape (the first tensor of the dataset's first item), for the cache key."""
    try:
        first: Any = loader.dataset[0]
    except (TypeError, IndexError, KeyError, AttributeError, NotImplementedError):
        return None
    while isinstance(first, list | tuple | dict) and first:
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    return list(first.shape) if hasattr(first, "shape") else None


def device_name(device: torch.device) -> str:
    """The card's name, or the CPU's kind and thread count: profiles from another device do not apply."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}-{platform.machine()}-{torch.get_num_threads()}threads"


def memory_limit(device: torch.device, fraction: float) -> int | None:
    """`fraction` of the device's memory; None on the CPU (its memory is not measured)."""
    if device.type != "cuda":
        return None
    return int(fraction * torch.cuda.get_device_properties(device).total_memory)


def card_max_power_W(meter: Any, world_size: int) -> float | None:
    """The card's maximum power limit times the ranks (Zeus's max_power), where Zeus can read it."""
    monitor = getattr(meter, "zeus_monitor", None)
    if monitor is None or not getattr(monitor, "gpu_indices", None):
        return None
    try:
        _, high_mW = monitor.gpus.get_power_management_limit_constraints(monitor.gpu_indices[0])
    except Exception:  # no power management on this card: the measured peak power is used
        return None
    return float(high_mW) / 1000.0 * world_size


def profile_key(
    trainer: Any,
    pl_module: torch.nn.Module,
    loader: Any,
    sizes: Sequence[int],
    settings: BatchSizeSettings,
    energy_source: str | None,
    limits_W: Sequence[int] | None,
) -> dict[str, Any]:
    """The cache key of this run's profile: everything that changes what a candidate measures."""
    return cache.profile_key(
        device=device_name(trainer.strategy.root_device),
        net=net_signature(pl_module),
        input_shape=input_shape(loader),
        precision=str(trainer.precision),
        world_size=trainer.world_size,
        candidates=list(sizes),
        warmup_steps=settings.warmup_steps,
        measure_steps=settings.measure_steps,
        optimizers=[type(o).__name__ for o in trainer.optimizers],
        meter_source=str(energy_source),
        limits_W=list(limits_W) if limits_W is not None else None,
    )
