"""The hardware table and the switches amp turns: precision plugin, TF32, channels_last.

`choose_precision` and `tf32_capable` are pure (the device is described to them), so tests state
the hardware instead of reading the host's. What reads the host (`cpu_bf16_supported`, `detect`)
stays in the callback module, where tests pin it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Tf32State = tuple[bool, bool, str]  # matmul.allow_tf32, cudnn.allow_tf32, float32 matmul precision


def choose_precision(device_type: str, cuda_capability: tuple[int, int] | None, bf16_supported: bool) -> str:
    """The Lightning precision for a device (pure: no hardware queries).

    Args:
        device_type: `cpu`, `cuda`, `mps`, ...
        cuda_capability: (major, minor) compute capability for `cuda`, else None.
        bf16_supported: whether the device runs bfloat16 natively (GPU: bf16 tensor cores;
            CPU: AVX512-BF16/AMX, i.e. without emulation).
    """
    if device_type == "cuda":
        if cuda_capability is None:
            return "32-true"
        if tuple(cuda_capability) >= (8, 0) and bf16_supported:
            return "bf16-mixed"
        if tuple(cuda_capability) >= (7, 0):  # Volta/Turing: fp16 tensor cores, no bf16
            return "16-mixed"
        return "32-true"  # Pascal and older: no tensor cores, little to gain
    # CPU (and other devices): bf16 autocast only where the hardware does bf16 natively.
    return "bf16-mixed" if bf16_supported else "32-true"


def tf32_capable(cuda_capability: tuple[int, int] | None) -> bool:
    """TF32 tensor cores exist from Ampere (compute capability 8.0) on."""
    return cuda_capability is not None and tuple(cuda_capability) >= (8, 0)


def resolve_device_type(accelerator: str | None) -> str:
    """The device type Lightning's `accelerator` setting will give (`auto` follows Lightning's order)."""
    acc = str(accelerator or "auto").lower()
    if acc in ("gpu", "cuda"):
        return "cuda"
    if acc == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    return acc


def precision_plugin(precision: str, device_type: str) -> Any:
    """Lightning's precision plugin for `precision` (16-mixed with its own GradScaler)."""
    from lightning.pytorch.plugins.precision import MixedPrecision, Precision

    if precision == "32-true":
        return Precision()
    if precision == "16-mixed":
        return MixedPrecision("16-mixed", device_type, scaler=torch.amp.GradScaler(device_type))
    return MixedPrecision(precision, device_type)


def enable_tf32() -> Tf32State:
    """TF32 on for the fp32 matmuls and convolutions left; returns what to restore at teardown."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    return saved


def restore_tf32(saved: Tf32State) -> None:
    """Global switches: leave the process as `enable_tf32` found it."""
    matmul, cudnn, matmul_precision = saved
    torch.set_float32_matmul_precision(matmul_precision)
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


def has_conv(module: nn.Module) -> bool:
    """channels_last only pays for nets with 2-D convolutions."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def to_channels_last(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: 4-D tensor inputs to channels_last (a no-op when they already are)."""
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
        for a in args
    )
