"""Which net a method acts on, by one documented rule for any LightningModule.

1. the module's `energy_target_net()` if it defines one (the user's override);
2. else its `net` attribute when that is an `nn.Module` (the lightning-hydra-template convention);
3. else the LightningModule itself.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def target_net(pl_module: Any) -> nn.Module:
    override = getattr(pl_module, "energy_target_net", None)
    if callable(override):
        net = override()
        if not isinstance(net, nn.Module):
            raise TypeError(f"{type(pl_module).__name__}.energy_target_net() must return an nn.Module")
        return net
    net = getattr(pl_module, "net", None)
    return net if isinstance(net, nn.Module) else pl_module
