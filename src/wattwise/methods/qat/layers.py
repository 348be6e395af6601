"""What QAT does to a net's layers, as functions of the net alone (no trainer, no callback state).

Which layers torchao quantises and which stay float (and why), inserting and removing the fake
quantisers, converting to int8, and the size of the file a user would ship. The callback
(`callback.py`) decides when; these say how.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import torch
from torch import nn


def base_config(granularity: str, group_size: int) -> Any:
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup

    weight = PerAxis(0) if granularity == "per_channel" else PerGroup(group_size)
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=weight)


def split_layers(net: nn.Module, granularity: str, group_size: int) -> tuple[list[str], dict[str, str]]:
    """(Linear layers torchao will quantise, {other weighted layer: why it stays float}).

    Linear layers inside `nn.MultiheadAttention` stay float: attention reads their weights
    directly, bypassing the fake quantiser, so quantising them would train one thing and
    export another.
    """
    attention = [name for name, m in net.named_modules() if isinstance(m, nn.MultiheadAttention)]
    quantised: list[str] = []
    kept: dict[str, str] = {}
    for name, m in net.named_modules():
        inside_attention = any(name.startswith(f"{a}.") for a in attention)
        if isinstance(m, nn.Linear) and inside_attention:
            kept[name] = "attention projection: attention reads its weight directly"
        elif isinstance(m, nn.Linear):
            if granularity == "per_group" and m.in_features % group_size:
                kept[name] = f"in_features {m.in_features} not a multiple of group_size {group_size}"
            else:
                quantised.append(name)
        elif not inside_attention and _has_own_weights(m):
            kept[name] = f"{type(m).__name__}: torchao's int8 QAT handles nn.Linear only"
    return quantised, kept


def _has_own_weights(m: nn.Module) -> bool:
    """A layer with a weight of its own (conv, GRU, embedding), not a container of such layers."""
    if isinstance(m, nn.MultiheadAttention | nn.RNNBase):
        return True
    return isinstance(getattr(m, "weight", None), torch.Tensor) and not isinstance(
        m, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm
    )


def is_fake_quantised(net: nn.Module) -> bool:
    from torchao.quantization.qat import FakeQuantizedLinear

    return any(isinstance(m, FakeQuantizedLinear) for m in net.modules())


def state_bytes(net: nn.Module) -> int:
    """Size of the net's serialised state dict, the file a user would ship."""
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.tell()


def strip_fake_quant(net: nn.Module) -> nn.Module:
    """A float copy of a fake-quantised net (each FakeQuantizedLinear back to nn.Linear)."""
    from torchao.quantization.qat import FakeQuantizedLinear

    out = copy.deepcopy(net)
    for name, m in list(out.named_modules()):
        if isinstance(m, FakeQuantizedLinear):
            parent = out.get_submodule(name.rpartition(".")[0]) if "." in name else out
            setattr(parent, name.rpartition(".")[2], m.to_linear())
    return out


def convert_to_int8(net: nn.Module, layers: list[str], granularity: str, group_size: int) -> nn.Module:
    """An int8 copy of `net` (fake-quantised or float): torchao's converted Linear layers for `layers`."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    out = copy.deepcopy(net).eval()
    names = set(layers)
    only = lambda m, fqn: fqn in names  # noqa: E731
    base = base_config(granularity, group_size)
    if is_fake_quantised(out):  # FakeQuantizedLinear -> Linear, then the base config quantises it
        quantize_(out, QATConfig(base, step="convert"), filter_fn=only)
    else:  # never fake-quantised: the same int8 scheme straight from the float weights
        quantize_(out, base, filter_fn=only)
    return out


def insert_fake_quant(net: nn.Module, layers: list[str], granularity: str, group_size: int) -> None:
    """Replace `layers` of `net` in place by fake-quantised ones (int8 simulated in float)."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    names = set(layers)
    quantize_(
        net,
        QATConfig(base_config(granularity, group_size), step="prepare"),
        filter_fn=lambda m, fqn: fqn in names,
    )


def trial_fake_quant(
    net: nn.Module, layers: list[str], granularity: str, group_size: int, x: Any
) -> str | None:
    """Why fake-quantising `layers` breaks `net` on a real batch `x`, or None when it runs.

    Run on a copy before the real net is touched: torchao's fake quantisers assume 2-D
    activations in some layouts (a Linear inside a recurrent net sees (N, L, C)), and a failure
    there must become a one-line step-aside, not a traceback mid-training.
    """
    trial = copy.deepcopy(net)
    try:
        insert_fake_quant(trial, layers, granularity, group_size)
        with torch.no_grad():
            trial(x)
    except Exception as err:  # noqa: BLE001 - any error from torchao or the net is the reason
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"torchao's fake-quantised net fails on a real batch ({type(err).__name__}: {text})"
    return None
